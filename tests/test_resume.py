"""Interrupted runs: SIGTERM ends the MLflow run KILLED; a killed run resumes to the same result."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    CALLBACK_FAILED, WRITES_OVER, all_runs, client_for, log_shows, signal_process_of, start, sweep_parent_and_children,
    wait_until,
)

pytestmark = pytest.mark.slow


def start_and_signal(cli, run_dir: Path, wait_for: str, signum: int, *overrides: str) -> subprocess.CompletedProcess:
    """Start a run, send it ``signum`` once its log shows ``wait_for``, and wait for it to end.

    The run must end within a minute of the signal (no timing finer than that: CI machines are shared).
    """
    proc = start(cli, f"hydra.run.dir={run_dir}", *overrides)
    wait_until(proc, log_shows(run_dir, wait_for))
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_ends_the_run_killed_and_keeps_the_last_epoch(cli):
    run_dir = cli.tmp_path / "run"
    proc = start_and_signal(cli, run_dir, "epoch 2/5000", signal.SIGTERM, "trainer.epochs=5000")
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith(
        "cifar.train: interrupted by SIGTERM: the last epoch's checkpoint (last.pt) is kept; continue with: "
        f"{shlex.join(['python', *(a for a in proc.args[1:] if not a.startswith('hydra.run.dir='))])} "
        f"trainer.resume=true hydra.run.dir={run_dir}")
    [run] = all_runs(cli)
    assert run.info.status == "KILLED"
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert 1 <= last["epoch"] < 5000 and last["mlflow_run_id"] == run.info.run_id  # a finished epoch
    assert not list(run_dir.glob(".*.tmp"))  # no half-written checkpoint


# The states that only some recipes hold (EMA weights, lookahead's slow weights, alternate flips, cutout's
# draws, a frozen whitening layer) must resume too, and the clipped steps, whose norms are logged.
TRICKS = ("trainer.ema_decay=0.9", "trainer.lookahead_every=3", "data.augment.alternate_flip=true",
          "data.augment.cutout=8", "trainer.whiten=true", "trainer.grad_clip_norm=1.0")


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics_in_the_same_mlflow_run(cli):
    cli("trainer.epochs=12", f"hydra.run.dir={cli.tmp_path / 'whole'}", *TRICKS)
    whole = json.loads((cli.tmp_path / "whole/metrics.json").read_text())

    run_dir = cli.tmp_path / "killed"
    every_2 = "trainer.checkpoint_every=2"  # the epochs after the last written one are trained again
    proc = start_and_signal(cli, run_dir, "epoch 3/12", signal.SIGKILL, "trainer.epochs=12", every_2, *TRICKS)
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    killed = torch.load(run_dir / "last.pt", weights_only=False)
    killed_at = killed["epoch"]
    assert 2 <= killed_at < 12 and killed_at % 2 == 0

    stopped_s = time.time()
    changed = cli("trainer.epochs=13", f"hydra.run.dir={run_dir}", "trainer.resume=true", every_2, *TRICKS,
                  check=False)
    assert changed.returncode == 2 and "differs from the interrupted run's (trainer.epochs: 12 -> 13)" in changed.stderr
    stopped_s = time.time() - stopped_s  # between the processes: the refused one above ran in it
    resumed = cli("trainer.epochs=12", f"hydra.run.dir={run_dir}", "trainer.resume=true", every_2, *TRICKS)
    assert f"Resuming after epoch {killed_at}" in resumed.stdout + resumed.stderr
    assert WRITES_OVER not in resumed.stdout + resumed.stderr  # the checkpoints it continues from
    assert json.loads((run_dir / "metrics.json").read_text()) == whole  # CPU, seeded: identical
    runs = {r.data.tags["hydra.output_dir"]: r for r in all_runs(cli)}
    assert len(runs) == 2 and runs[str(run_dir)].info.status == "FINISHED"
    client, run = client_for(cli), runs[str(run_dir)]
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert {m.step for m in history} == set(range(1, 13))  # one run holds every epoch
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")} == set(range(1, 13))
    assert len(run.inputs.dataset_inputs) == 1  # its data, logged again by the resumed process
    # the run's wall time: the killed process's up to its last.pt, then the resumed one's; not the time between
    epoch_seconds = {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, "epoch_seconds"),
                                                       key=lambda m: m.timestamp)}  # the resumed process's last
    resumed_s = sum(seconds for epoch, seconds in epoch_seconds.items() if epoch > killed_at)
    assert killed["run_seconds"] + resumed_s < run.data.metrics["run_seconds"]
    assert run.data.metrics["run_seconds"] < (run.info.end_time - run.info.start_time) / 1000 - stopped_s


def test_a_stopped_grid_sweep_continues_with_the_command_it_prints(cli):
    # job 0 finishes, job 1 is stopped once its first epoch's last.pt is written, job 2 has not started
    proc = start(cli, "trainer.epochs=2,60,3", multirun=True)
    wait_until(proc, (cli.tmp_path / "sweep" / "1" / "last.pt").exists, interval=0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and CALLBACK_FAILED.search(stderr) is None, stderr
    before = {r.data.params["trainer.epochs"]: r for r in all_runs(cli) if "mlflow.parentRunId" in r.data.tags}
    assert {epochs: r.info.status for epochs, r in before.items()} == {"2": "FINISHED", "60": "KILLED"}

    prefix = "cifar.train: interrupted by SIGTERM: finished jobs are kept; continue with: "
    [line] = [line for line in stderr.splitlines() if line.startswith(prefix)]
    command = shlex.split(line.removeprefix(prefix))
    assert command[-2:] == ["trainer.resume=true", f"hydra.sweep.dir={cli.tmp_path / 'sweep'}"]
    resumed = subprocess.run([sys.executable, *command[1:], "+mlflow.tags.phase=2"], cwd=cli.tmp_path,
                             env=cli.command()[1], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and CALLBACK_FAILED.search(resumed.stderr) is None, resumed.stderr
    assert f"MLflow run {before['2'].info.run_id} had finished" in resumed.stdout  # not trained or logged again
    assert "Resuming after epoch" in resumed.stdout and "starts from the beginning" in resumed.stdout

    runs = all_runs(cli)
    parent, children = sweep_parent_and_children(runs)  # the first sweep's parent, taken up again
    jobs = {r.data.params["trainer.epochs"]: r for r in children}
    assert sorted(jobs) == ["2", "3", "60"] and {r.info.status for r in runs} == {"FINISHED"}
    assert jobs["2"].info.end_time == before["2"].info.end_time
    assert jobs["60"].info.run_id == before["60"].info.run_id  # the stopped job's run, continued
    history = client_for(cli).get_metric_history(jobs["60"].info.run_id, "val/acc")
    assert sorted(m.step for m in history) == list(range(1, 61))
    assert parent.data.metrics["sweep/jobs"] == 3 and parent.data.metrics["sweep/jobs_finished"] == 3
    assert parent.data.tags["phase"] == "2"  # a tag given to the resumed sweep; its parent had kept the first's
    assert jobs["3"].data.tags["phase"] == "2" and jobs["60"].data.tags["phase"] == "2"


def test_a_joblib_sweep_that_loses_a_worker_stops_in_one_line_and_continues_with_the_command_it_prints(cli):
    """The system kills a process where memory runs out (SIGKILL, as here), and joblib then stops the other workers:
    the sweep ended with joblib's traceback, its parent FAILED, its jobs' runs left RUNNING."""
    from cifar.tracking import OUTPUT_DIR_TAG

    proc = start(cli, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-3,5e-4",
                 "trainer.epochs=40", multirun=True)
    jobs = [cli.tmp_path / "sweep" / job for job in ("0", "1")]
    wait_until(proc, lambda: all((job / "last.pt").exists() for job in jobs), interval=0.1)
    [killed] = [r for r in all_runs(cli) if r.data.tags.get(OUTPUT_DIR_TAG) == str(jobs[0])]
    signal_process_of(killed, signal.SIGKILL)  # job 0's worker process
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in stderr and CALLBACK_FAILED.search(stderr) is None, stderr
    prefix = ("cifar.train: error: a worker process of the launcher was killed (exit codes {SIGKILL(-9)}), as the "
              "system kills one where it runs out of memory (fewer jobs at once need less: hydra.launcher.n_jobs): "
              "finished jobs are kept; continue with: ")
    [line] = [line for line in stderr.splitlines() if line.startswith(prefix)]
    before = all_runs(cli)
    assert [r.info.status for r in before] == ["KILLED"] * 3  # the parent and both jobs: none left RUNNING

    command = shlex.split(line.removeprefix(prefix))
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=cli.tmp_path, env=cli.command()[1],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and resumed.stdout.count("Resuming after epoch") == 2, resumed.stderr
    parent, children = sweep_parent_and_children(all_runs(cli))  # the same runs, taken up again
    assert {r.info.run_id for r in (parent, *children)} == {r.info.run_id for r in before}
    assert {r.info.status for r in (parent, *children)} == {"FINISHED"}
    for child in children:
        history = client_for(cli).get_metric_history(child.info.run_id, "val/acc")
        assert {m.step for m in history} == set(range(1, 41))


def test_a_job_stopped_before_it_saved_an_epoch_starts_again_in_its_own_mlflow_run(cli):
    proc = start(cli, "trainer.epochs=2,60", multirun=True)
    last = cli.tmp_path / "sweep" / "1" / "last.pt"
    wait_until(proc, last.exists, interval=0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    last.unlink()  # as where the sweep was stopped in the job's first epoch
    [stopped] = [r for r in all_runs(cli) if r.data.params.get("trainer.epochs") == "60"]

    resumed = cli("trainer.epochs=2,60", "trainer.resume=true", multirun=True)
    assert "this job of the resumed sweep starts from the beginning" in resumed.stdout
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    [job] = [r for r in children if r.data.params["trainer.epochs"] == "60"]
    assert job.info.run_id == stopped.info.run_id and parent.data.metrics["sweep/jobs"] == 2
    history = client_for(cli).get_metric_history(job.info.run_id, "val/acc")
    assert {m.step for m in history} == set(range(1, 61))


def test_resume_without_a_checkpoint_names_the_fix(cli):
    proc = cli("trainer.resume=true", check=False)
    assert proc.returncode == 2
    assert "trainer.resume=true but" in proc.stderr and "last.pt does not exist" in proc.stderr
    assert "set hydra.run.dir to the interrupted run's output dir" in proc.stderr
    assert all_runs(cli) == [] and not (cli.tmp_path / "run").exists()  # refused before Hydra made the dir


def test_resuming_from_a_damaged_checkpoint_is_refused_in_one_line_and_changes_nothing(cli):
    run_dir = cli.tmp_path / "run"
    cli(f"hydra.run.dir={run_dir}", "trainer.epochs=1")
    last = run_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # as a copy cut short leaves it
    proc = cli(f"hydra.run.dir={run_dir}", "trainer.epochs=2", "trainer.resume=true", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"cifar.train: error: trainer.resume=true but {last} is not a readable checkpoint (")
    assert proc.stderr.endswith("): copy it again from where it came from, or drop trainer.resume to start a new run\n")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED" and run.data.metrics["epochs_run"] == 1


def test_resuming_a_run_that_a_live_process_still_runs_is_refused_and_leaves_it_running(cli):
    from cifar import owner
    from cifar.tracking import OWNER_TAG

    cli("trainer.epochs=2")
    [run] = all_runs(cli)
    client = client_for(cli)
    client.update_run(run.info.run_id, status="RUNNING")  # as while another process trains it
    client.set_tag(run.info.run_id, OWNER_TAG, owner.current())
    proc = cli("trainer.epochs=2", "trainer.resume=true", check=False)
    assert proc.returncode == 2 and proc.stderr.endswith(
        f"error: trainer.resume=true but MLflow run {run.info.run_id} is still RUNNING, in process "
        f"{owner.current()}: stop that process (Ctrl-C or SIGTERM) or wait for it, then resume\n")
    assert client.get_run(run.info.run_id).info.status == "RUNNING" and len(all_runs(cli)) == 1


def test_a_resumed_grid_whose_jobs_would_continue_other_jobs_dirs_is_refused_before_any_job(cli):
    cli("trainer.epochs=1,2", multirun=True)
    sweep_dir, before = cli.tmp_path / "sweep", all_runs(cli)
    proc = cli("trainer.epochs=3,1,2", "trainer.resume=true", f"hydra.sweep.dir={sweep_dir}", multirun=True,
               check=False)  # 3 put first: job 0 would continue epochs=1's dir, job 1 epochs=2's
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Error executing job" not in proc.stderr
    assert proc.stderr.startswith(f"cifar.train: error: trainer.resume=true but the job trainer.epochs=3 would "
                                  f"continue {sweep_dir / '0'}, where the stopped sweep ran trainer.epochs=1: ")
    assert "- trainer.epochs=1" in (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text()  # not written over
    assert [r.info.run_id for r in all_runs(cli)] == [r.info.run_id for r in before]
    cli("trainer.epochs=1,2,3", "trainer.resume=true", f"hydra.sweep.dir={sweep_dir}", multirun=True)  # 3 after
    _, children = sweep_parent_and_children(all_runs(cli))
    assert sorted(r.data.params["trainer.epochs"] for r in children) == ["1", "2", "3"]


def test_resuming_a_sweep_where_none_was_stopped_is_refused_before_any_run_starts(cli):
    proc = cli("trainer.epochs=2,3", "trainer.resume=true", multirun=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.endswith(
        f"cifar.train: error: trainer.resume=true but {cli.tmp_path / 'sweep'} holds no stopped sweep (no "
        "mlflow_sweep.json): set hydra.sweep.dir to the stopped sweep's dir (the line printed when it stopped "
        "gives it), or drop trainer.resume\n")
    assert "Error executing job" not in proc.stderr  # refused once, by the sweep, not by each job
    assert not (cli.tmp_path / "sweep").exists() and all_runs(cli) == []  # no job dir, no parent run either


def test_resuming_a_sweep_that_a_live_process_still_runs_is_refused_before_any_job_starts(cli):
    from cifar import owner
    from cifar.tracking import OWNER_TAG

    cli("trainer.epochs=1,2", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    client = client_for(cli)
    client.update_run(parent.info.run_id, status="RUNNING")  # as while the sweep's process still runs
    client.set_tag(parent.info.run_id, OWNER_TAG, owner.current())
    proc = cli("trainer.epochs=1,2", "trainer.resume=true", multirun=True, check=False)
    assert proc.returncode == 2 and proc.stderr.endswith(
        f"error: trainer.resume=true but the stopped sweep's MLflow parent run {parent.info.run_id} is still "
        f"RUNNING, in process {owner.current()}: stop that process (Ctrl-C or SIGTERM) or wait for it, then resume\n")
    assert "Launching" not in proc.stdout + proc.stderr  # no job started
    after = client.get_run(parent.info.run_id)
    assert after.info.status == "RUNNING" and after.data.tags[OWNER_TAG] == owner.current()
    assert [r.info.end_time for r in children] == [client.get_run(r.info.run_id).info.end_time for r in children]


def test_resuming_into_another_store_or_a_deleted_run_is_refused_and_changes_nothing(cli, tmp_path):
    cli("trainer.epochs=1,2", multirun=True)
    sweep_file = tmp_path / "sweep" / "mlflow_sweep.json"
    recorded = sweep_file.read_bytes()
    parent, _ = sweep_parent_and_children(all_runs(cli))
    args, env = cli.command("trainer.epochs=1,2", "trainer.resume=true", multirun=True)

    def resume(uri: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True,
                              text=True, timeout=600)

    other = f"sqlite:///{tmp_path / 'other.db'}"
    proc = resume(other)
    assert proc.returncode == 2 and proc.stderr.endswith(
        f"error: trainer.resume=true but the stopped sweep's MLflow parent run {parent.info.run_id} is not in the "
        f"store {other}: resume with the store it was logged to (MLFLOW_TRACKING_URI or mlflow.tracking_uri), "
        "or drop trainer.resume\n")
    client = client_for(cli)
    client.delete_run(parent.info.run_id)
    proc = resume(cli.tracking_uri)
    assert proc.returncode == 2
    assert f"was deleted: restore it with `mlflow runs restore --run-id {parent.info.run_id}`" in proc.stderr
    assert sweep_file.read_bytes() == recorded and client.get_run(parent.info.run_id).info.status == "FINISHED"

    client.restore_run(parent.info.run_id)
    proc = resume(cli.tracking_uri)
    assert proc.returncode == 0 and proc.stdout.count("had finished") == 2
    assert sweep_parent_and_children(all_runs(cli))[0].info.run_id == parent.info.run_id
