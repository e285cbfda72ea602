"""Beyond one machine: workers that share an Optuna study and an MLflow store on a real PostgreSQL
server, the submitit and Ray launchers, and one GPU per job."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar import device, launchers, parallel, stores
from cifar.errors import ConfigError, UserError
from tests import servers
from tests.conftest import (
    all_runs, client_for, run_on_configured_store, signal_process_of, sweep_parent_and_children, wait_until,
)
from tests.conftest import start as start_sweep

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
# lr 1e-12 never learns: the threshold pruner stops it after epoch 1; lr 3e-3 passes 0.25 (as in test_sweeps.py)
PRUNABLE_SEARCH = ("hparams_search=optuna", "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.25",
                   "optimizer=adam", "scheduler=none", "optimizer.lr=choice(3e-3,1e-12)")


@pytest.mark.slow
def test_two_workers_share_one_study_and_one_parent_run_on_postgresql(cli):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed (uv sync --extra postgres)")

    with servers.postgres(["optuna", "mlflow"]) as urls:
        # A password in the URLs (the server trusts every local connection): never recorded or printed
        with_password = {name: url.replace("cifar@", "cifar:s3cret@") for name, url in urls.items()}
        # The same command twice at once, sharing the sweep dir too (started in the same second).
        args, env = cli.command(*PRUNABLE_SEARCH, f"hydra.sweeper.storage={with_password['optuna']}",
                                "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=6", multirun=True)
        env["MLFLOW_TRACKING_URI"] = with_password["mlflow"]
        workers = [subprocess.Popen(args, cwd=cli.tmp_path, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [worker.communicate(timeout=540) for worker in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        assert all(f"Storage: {urls['optuna']}" in stdout + stderr for stdout, stderr in outputs), outputs
        assert not any("s3cret" in stdout + stderr for stdout, stderr in outputs)

        study = optuna.load_study(study_name="shared", storage=urls["optuna"])
        trials = [t for t in study.trials if not t.user_attrs.get("surplus")]  # surplus: asked, never run
        assert len(trials) == 6
        for trial in trials:  # each pruned or completed from whichever worker ran it, through the storage
            assert trial.state == (PRUNED if trial.params["optimizer.lr"] == 1e-12 else COMPLETE)
        assert len({t.user_attrs["sweeper"] for t in trials}) == 2  # both workers ran trials
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no worker replayed the other's samples

        client = MlflowClient(tracking_uri=urls["mlflow"])
        experiment = client.get_experiment_by_name(cli.experiment)
        parent, children = sweep_parent_and_children(client.search_runs([experiment.experiment_id]))
        assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
        assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == sorted(t.number for t in trials)
        assert {c.data.tags["hydra.output_dir"] for c in children} == {t.user_attrs["hydra_job"] for t in trials}
        assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/jobs"] == 6
        assert parent.data.tags["optuna.storage"] == urls["optuna"]
        assert not any("s3cret" in str(run.data.params) + str(run.data.tags) for run in (parent, *children))
    assert all_runs(cli) == []  # nothing went to the SQLite store of the other tests


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    cli("hydra/launcher=submitit_local", "optimizer.lr=1e-3,5e-4", "trainer.epochs=1", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.0005", "0.001"]
    assert {c.info.status for c in children} == {"FINISHED"} and parent.info.status == "FINISHED"
    assert len(list((cli.tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran both
    # which ran at once, each a process here: the cores shared out between them, not all of them each
    assert {c.data.tags["torch.threads"] for c in children} == {str(max(1, parallel.cpu_cores() // 2))}


@pytest.mark.slow
def test_a_submitit_job_requeued_after_preemption_resumes_from_its_last_epoch_in_the_same_run(cli):
    """SLURM signals a job that it preempts (or whose time is almost up) with SIGUSR2, as here, and submitit
    requeues it; a requeued job trained again from epoch 1, in a new MLflow run, its first left KILLED."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    epochs = 30  # about 5 s of training here: the signal comes before the end
    proc = start_sweep(cli, "hydra/launcher=submitit_local", "optimizer.lr=1e-3", f"trainer.epochs={epochs}",
                       multirun=True)
    wait_until(proc, lambda: job_past_epoch_2(cli) is not None, interval=0.1)
    job = job_past_epoch_2(cli)
    signal_process_of(job, signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert_resumed_in_its_run(cli, job, epochs)


def job_past_epoch_2(cli, job_dir: Path | None = None):
    """The run of a job of the sweep (the one in ``job_dir``, where given) once it has logged 2 epochs, else None."""
    from cifar.tracking import OUTPUT_DIR_TAG

    runs = [r for r in all_runs(cli) if "mlflow.parentRunId" in r.data.tags and "val/acc" in r.data.metrics
            and (job_dir is None or r.data.tags.get(OUTPUT_DIR_TAG) == str(job_dir))]
    logged = runs and client_for(cli).get_metric_history(runs[0].info.run_id, "val/acc")
    return runs[0] if logged and len(logged) >= 2 else None


def assert_resumed_in_its_run(cli, job, epochs: int) -> str:
    """Assert that the sweep's one job, stopped as run ``job``, finished in that run with every epoch logged, after
    training from where it was stopped (not from epoch 1 again); return its log."""
    logs = job_logs(cli.tmp_path / "sweep")
    parent, [child] = sweep_parent_and_children(all_runs(cli))  # the same run, taken up again
    assert child.info.run_id == job.info.run_id and child.info.status == parent.info.status == "FINISHED", logs
    history = client_for(cli).get_metric_history(child.info.run_id, "val/acc")
    assert {m.step for m in history} == set(range(1, epochs + 1))
    log = (cli.tmp_path / "sweep" / "0" / "train.log").read_text()
    assert "Resuming after epoch " in log and log.count(f"epoch 1/{epochs} ") == 1, log
    return log


@pytest.mark.slow
def test_a_submitit_job_killed_without_a_result_stops_the_sweep_in_one_line_and_it_continues(cli):
    """A job that the system kills (SLURM's out-of-memory kill; SIGKILL here) leaves submitit no result: the sweep
    ended with submitit's traceback, the job's run left RUNNING and the sweep's parent FINISHED."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    from cifar.launchers import SUBMITIT_JOB_TAG

    client = client_for(cli)
    proc = start_sweep(cli, "hydra/launcher=submitit_local", "trainer.epochs=40,2", multirun=True)
    job_dir = cli.tmp_path / "sweep" / "0"
    wait_until(proc, lambda: job_past_epoch_2(cli, job_dir) is not None, interval=0.1)
    job = job_past_epoch_2(cli, job_dir)
    signal_process_of(job, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    said = re.search(r"^cifar.train: error: submitit job (\S+) ended without a result \(state: \w+\), as a job that is "
                     r"killed \(out of memory, say\) or cancelled does; its logs are in \S+/sweep/.submitit/\S+: "
                     r"finished jobs are kept; continue with: (.*)$", stderr, re.MULTILINE)
    assert said, stderr
    parent, children = sweep_parent_and_children(all_runs(cli))
    epochs = {c.data.params["trainer.epochs"]: c.info.status for c in children}
    assert parent.info.status == "KILLED" and epochs == {"40": "KILLED", "2": "FINISHED"}, epochs
    assert job.data.tags[SUBMITIT_JOB_TAG] == said[1]  # how the sweep finds the job's run, wherever it ran

    resumed = subprocess.run([sys.executable, *shlex.split(said[2])[1:]], cwd=cli.tmp_path, env=cli.command()[1],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    parent, children = sweep_parent_and_children(all_runs(cli))  # the same runs, the killed one taken up again
    assert {c.info.status for c in (parent, *children)} == {"FINISHED"} and job.info.run_id in {
        c.info.run_id for c in children}
    assert {m.step for m in client.get_metric_history(job.info.run_id, "val/acc")} == set(range(1, 41))
    assert "Resuming after epoch " in (cli.tmp_path / "sweep" / "0" / "train.log").read_text()


def test_a_requeued_submitit_job_resumes_whatever_its_overrides_said_of_resuming():
    from cifar.continuation import resumed  # what cifar.submitit_launcher requeues a job with

    assert resumed(["optimizer.lr=0.001", "trainer.epochs=3"]) == ["optimizer.lr=0.001", "trainer.epochs=3",
                                                                  "trainer.resume=true"]
    # a job of a resumed sweep, or one requeued before: one value, not one more at each requeue
    assert resumed(["trainer.resume=true", "optimizer.lr=0.001"]) == ["optimizer.lr=0.001", "trainer.resume=true"]
    assert resumed(["trainer.resume=false"]) == ["trainer.resume=true"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, str]]:
    """A Ray head started here (``ray start --head`` on loopback, from a directory of its own) for the tests of this
    module; yields the overrides that send a sweep to it."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="uv sync --extra ray")
    ray = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live there
    port = servers.free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # else ray start asks for the token of ~/.ray/auth_token
    start = subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                           cwd=temp_dir, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield "hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def job_logs(sweep_dir: Path) -> str:
    """The last lines of the logs of a sweep's jobs, to say what they did where a test fails."""
    return "\n".join(log.read_text()[-2000:] for log in sorted(sweep_dir.glob("*/train.log")))


@pytest.mark.slow
def test_ray_launcher_runs_a_two_job_sweep_on_a_running_cluster_and_sigterm_stops_one(cli, ray_cluster):
    # a relative sweep dir is the sweep's, though Ray's jobs start where `ray start` ran
    cli(*ray_cluster, "optimizer.lr=1e-3,5e-4", "trainer.epochs=1", "hydra.sweep.dir=sweep", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.0005", "0.001"]
    assert sorted(c.data.tags["hydra.output_dir"] for c in children) == [str(cli.tmp_path / "sweep" / job)
                                                                       for job in ("0", "1")]
    assert {c.info.status for c in children} == {"FINISHED"} and parent.info.status == "FINISHED"
    first_sweep = {r.info.run_id for r in (parent, *children)}

    # SIGTERM stops a Ray sweep as Ctrl-C does, though joining the cluster gave Ray its own handler
    stopped = start_sweep(cli, *ray_cluster, "optimizer.lr=1e-3,5e-4", "trainer.epochs=1000",
                          f"hydra.sweep.dir={cli.tmp_path / 'stopped'}", multirun=True)
    wait_until(stopped, lambda: [r.info.status for r in all_runs(cli)].count("RUNNING") == 3, interval=0.5)
    time.sleep(5)  # the jobs train
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    deadline = time.monotonic() + 60  # the jobs, cancelled by Ray, end their runs on the cluster
    while "RUNNING" in {r.info.status for r in all_runs(cli)} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stopped.returncode == 128 + signal.SIGTERM, stderr
    assert "cifar.train: interrupted by SIGTERM: finished jobs are kept; continue with: " in stderr
    stopped_parent, stopped_children = sweep_parent_and_children(
        [r for r in all_runs(cli) if r.info.run_id not in first_sweep])
    assert [r.info.status for r in (stopped_parent, *stopped_children)] == ["KILLED"] * 3, job_logs(
        cli.tmp_path / "stopped")


@pytest.mark.slow
def test_a_ray_job_whose_process_is_lost_resumes_from_its_last_epoch_in_the_same_run(cli, ray_cluster):
    """Ray runs a task again where its process is lost (killed, as here, or on a node that left the cluster); the
    job trained again from epoch 1 in a new MLflow run, its first left RUNNING."""
    from cifar.tracking import OWNER_TAG

    epochs = 30  # about 7 s of training here: the kill comes before the end
    proc = start_sweep(cli, *ray_cluster, "optimizer.lr=1e-3", f"trainer.epochs={epochs}", multirun=True)
    wait_until(proc, lambda: job_past_epoch_2(cli) is not None, interval=0.1)
    job = job_past_epoch_2(cli)
    signal_process_of(job, signal.SIGKILL)  # the Ray worker that runs the job
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr + job_logs(cli.tmp_path / "sweep")
    log = assert_resumed_in_its_run(cli, job, epochs)
    assert f"Ray runs this job again, its process {job.data.tags[OWNER_TAG]} lost" in log


def test_a_ray_job_knows_a_second_attempt_of_its_task_and_the_process_of_the_first(tmp_path):
    from cifar import owner
    from cifar.ray_launcher import lost_attempt

    assert lost_attempt(tmp_path, "task-a") is None  # its first attempt
    first = owner.current()
    assert lost_attempt(tmp_path, "task-a") == first  # Ray runs task-a again: its first attempt's process
    assert lost_attempt(tmp_path, "task-b") is None  # a job of a resumed sweep: another task, in the same dir
    assert lost_attempt(tmp_path, "task-b") == first and lost_attempt(tmp_path / "other", "task-b") is None


def test_cluster_launcher_presets_ask_for_one_gpu_per_trial(cli):
    def launcher(name: str) -> dict:
        args, env = cli.command(f"hydra/launcher={name}", "--cfg", "hydra", "-p", "hydra.launcher")
        proc = subprocess.run(args, cwd=cli.tmp_path, env=env, capture_output=True, text=True, check=True)
        return yaml.safe_load(proc.stdout)

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    slurm = launcher("submitit_slurm")
    assert slurm["gpus_per_node"] == 1 and slurm["timeout_min"] == 120 and "partition" in slurm
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="uv sync --extra ray")
    assert launcher("ray")["ray"]["remote"] == {"num_gpus": "${cifar_ray_gpus_per_trial:}"}


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:5000", "127.0.0.1"),
    ("http://localhost:5000", "localhost"),
    ("postgresql://cifar@[::1]:5432/mlflow", "::1"),
    ("postgresql://cifar@127.0.1.1/optuna", "127.0.1.1"),
    ("http://mlflow-host:5000", None),  # a host name: where it leads is the other machines' to say
    ("postgresql://cifar@10.0.0.5/mlflow", None),
    ("sqlite:///mlflow.db", None),  # a file: on a shared filesystem, every machine reaches it
])
def test_a_store_on_the_loopback_address_is_told_from_one_other_machines_reach(url, host):
    assert stores.loopback_host(url) == host


@pytest.fixture
def ray_init(monkeypatch):
    """Replace ``ray.init`` with ``ray_init(fake)``: ``fake(**init)`` is called after a SIGTERM handler of Ray's own is
    put in, as the real one does. The process's SIGTERM handler is put back after the test."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="uv sync --extra ray")
    import ray

    def replace(fake):
        def init(**config):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(signal.SIGTERM))
            fake(**config)

        monkeypatch.setattr(ray, "init", init)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    original = signal.getsignal(signal.SIGTERM)
    yield replace
    signal.signal(signal.SIGTERM, original)


@pytest.mark.parametrize("uv_integration", [None, "1"])
def test_the_ray_launcher_keeps_the_sweeps_sigterm_handler_directory_and_environment(monkeypatch, tmp_path, ray_init,
                                                                                      uv_integration):
    from hydra_plugins.hydra_ray_launcher import ray_launcher as hydra_ray_launcher

    from cifar.ray_launcher import UV_INTEGRATION_VAR, RayLauncher

    joined = {}

    def join(**init):
        assert os.environ[UV_INTEGRATION_VAR] == (uv_integration or "0")  # Ray reads it on its first import
        joined.update(init)

    ray_init(join)
    monkeypatch.setenv(UV_INTEGRATION_VAR, uv_integration or "")  # so that the launcher's setting is undone after
    if uv_integration is None:
        monkeypatch.delenv(UV_INTEGRATION_VAR)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://cifar@db-host/mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hydra_ray_launcher.RayLauncher, "launch", lambda self, jobs, first: ["launched", *jobs])
    launcher = RayLauncher(OmegaConf.create({"init": {"address": "head-node:6379"}, "remote": {}}))

    def sweeps_handler(*_):  # cifar.train's: SIGTERM as Ctrl-C
        pass

    signal.signal(signal.SIGTERM, sweeps_handler)
    assert launcher.launch([["optimizer.lr=0.1"]], 0) == ["launched", ["optimizer.lr=0.1"]]
    assert signal.getsignal(signal.SIGTERM) is sweeps_handler
    # the jobs have the directory and environment of `ray start`: they are given the sweep's directory and store
    enter_sweep_dir = joined["runtime_env"].pop("worker_process_setup_hook")
    assert joined == {"address": "head-node:6379", "runtime_env": {
        "env_vars": {"MLFLOW_TRACKING_URI": "postgresql://cifar@db-host/mlflow"}}}
    monkeypatch.chdir(tmp_path.parent)  # where `ray start` ran
    enter_sweep_dir()
    assert Path.cwd() == tmp_path


def test_the_ray_jobs_run_the_users_setup_hook_after_the_launchers(monkeypatch, tmp_path, ray_init):
    from hydra_plugins.hydra_ray_launcher import ray_launcher as hydra_ray_launcher

    from cifar.ray_launcher import RayLauncher

    joined = {}
    ray_init(joined.update)
    (tmp_path / "users_setup.py").write_text("import os\nran_in = []\ndef setup():\n    ran_in.append(os.getcwd())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    monkeypatch.chdir(sweep_dir)
    monkeypatch.setattr(hydra_ray_launcher.RayLauncher, "launch", lambda self, jobs, first: [])
    init = {"address": "auto", "runtime_env": {"worker_process_setup_hook": "users_setup.setup"}}
    RayLauncher(OmegaConf.create({"init": init, "remote": {}})).launch([[]], 0)
    monkeypatch.chdir(tmp_path)  # where `ray start` ran
    joined["runtime_env"]["worker_process_setup_hook"]()
    import users_setup

    assert users_setup.ran_in == [str(sweep_dir)]  # in the sweep's directory, as a job of a local launcher


def test_a_ray_setup_hook_that_names_no_function_is_refused_before_any_job(cli):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="uv sync --extra ray")
    proc = cli("hydra/launcher=ray", "+hydra.launcher.ray.init.runtime_env.worker_process_setup_hook=setup",
               "optimizer.lr=1e-3,5e-4", multirun=True, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "cifar.train: error: hydra.launcher.ray.init.runtime_env.worker_process_setup_hook='setup' is not a "
        "function's name: give it as module.function (each job runs it after the launcher's)")
    assert not (cli.tmp_path / "sweep").exists() and not all_runs(cli)  # Ray not joined, no parent run
    not_a_name = {"launcher": {**RAY, "ray": {"init": {"runtime_env": {"worker_process_setup_hook": 3}}}}}
    with pytest.raises(ConfigError, match=r"^hydra.launcher.ray.init.runtime_env.worker_process_setup_hook=3 is not"):
        launchers.check_cluster(OmegaConf.create(not_a_name))


def test_the_ray_jobs_setup_hook_needs_no_project_and_keeps_a_directory_its_machine_lacks(tmp_path):
    from ray import cloudpickle

    from cifar.ray_launcher import sweep_dir_hook

    # a worker whose environment lacks this project (Ray pickles the hook; the job then says what is missing)
    ray_start_dir = tmp_path / "ray-start"
    ray_start_dir.mkdir()
    worker = ("import os, pickle, sys; sys.modules['cifar'] = None; "
              "pickle.loads(sys.stdin.buffer.read())(); print(os.getcwd())")
    for sweep_dir, cwd in [(tmp_path, tmp_path), (tmp_path / "elsewhere", ray_start_dir)]:  # elsewhere: not here
        hook = cloudpickle.dumps(sweep_dir_hook(str(sweep_dir)))
        ran = subprocess.run([sys.executable, "-c", worker], input=hook, cwd=ray_start_dir, capture_output=True)
        assert ran.returncode == 0, ran.stderr.decode()
        assert ran.stdout.decode().strip() == str(cwd)
    assert f"The sweep's directory {tmp_path / 'elsewhere'} is not on this machine: this job's relative paths are " \
           f"taken from {ray_start_dir}" in ran.stderr.decode()


@pytest.mark.parametrize(("address", "error", "said"), [
    # ray.init(address="auto") where no cluster was started
    ("auto", ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to"),
     "hydra/launcher=ray found no Ray cluster to join (Could not find any running Ray instance.): start one "
     "(ray start --head), or set hydra.launcher.ray.init.address to its head's"),
    # a head that answers and asks for a token (Ray's message, as it was here where ray start found ~/.ray/auth_token)
    ("10.0.0.5:6379", ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379"),
     "hydra/launcher=ray could not join the Ray cluster at 10.0.0.5:6379 (Failed to connect to Ray cluster at "
     "10.0.0.5:6379): check that its head runs there, and where it asks for a token (ray start does where it finds "
     "~/.ray/auth_token), set RAY_AUTH_MODE=token here, with the cluster's token in ~/.ray/auth_token or "
     "RAY_AUTH_TOKEN"),
    # a cluster started from another environment (Ray's message, as it was here with a head on Python 3.12)
    ("auto", RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.60.0\n    Python: 3.12.1\n"
                          "This process on node 10.0.0.2 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7\n"),
     "hydra/launcher=ray cannot join the Ray cluster: Version mismatch: The cluster was started with: Ray: 2.60.0 "
     "Python: 3.12.1 This process on node 10.0.0.2 was started with: Ray: 2.60.0 Python: 3.11.7: run the sweep with "
     "the Ray and Python that the cluster was started with (uv run ray start ... from this project starts it with "
     "this project's)"),
    ("auto", RuntimeError("Maybe you called ray.init twice by accident?"), None),  # no user error: Ray's traceback
])
def test_the_ray_launcher_says_in_one_line_where_it_cannot_join_a_cluster(ray_init, address, error, said):
    from cifar.ray_launcher import RayLauncher

    def fail(**init):
        raise error

    ray_init(fail)
    sweeps_handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(UserError if said else type(error)) as refusal:
        RayLauncher(OmegaConf.create({"init": {"address": address}, "remote": {}})).launch([[]], 0)
    assert signal.getsignal(signal.SIGTERM) is sweeps_handler
    assert str(refusal.value) == (said or str(error))


@pytest.mark.parametrize("cause", ["No module named 'hydra'", "something else"])
def test_a_ray_worker_without_the_project_is_said_in_one_line(monkeypatch, ray_init, cause):
    from hydra_plugins.hydra_ray_launcher import ray_launcher as hydra_ray_launcher
    from ray.exceptions import RaySystemError, RayTaskError

    from cifar.ray_launcher import RayLauncher

    # as Ray raised it here, where `ray start` ran in an environment with Ray alone
    error = RayTaskError("_run_job", f"Traceback (most recent call last):\nModuleNotFoundError: {cause}",
                         RaySystemError(f"System error: {cause}")).as_instanceof_cause()

    def launch(self, jobs, first):
        raise error

    ray_init(lambda **init: None)
    monkeypatch.setattr(hydra_ray_launcher.RayLauncher, "launch", launch)
    shut_down = []
    monkeypatch.setattr("ray.shutdown", lambda: shut_down.append(True))
    with pytest.raises(UserError if "module" in cause else RayTaskError) as refusal:
        RayLauncher(OmegaConf.create({"init": {"address": "auto"}, "remote": {}})).launch([[]], 0)
    if "module" in cause:  # Ray stopped first: it would print the other jobs' same error after this line
        assert str(refusal.value) == (
            "hydra/launcher=ray: a worker of the Ray cluster could not load a job (No module named 'hydra'): its "
            "machine's ray start ran in an environment without this project; start the cluster with uv run ray start "
            "... from this project on each machine")
        assert shut_down == [True]
    else:
        assert refusal.value is error and shut_down == []


RAY = {"_target_": launchers.RAY_LAUNCHER, "ray": {"init": {"address": None}}}


@pytest.mark.parametrize(("launcher", "ray_address", "elsewhere"), [
    ({"_target_": launchers.SLURM_LAUNCHER}, None, True),
    ({"_target_": launchers.LOCAL_SUBMITIT_LAUNCHER}, None, False),
    ({"_target_": parallel.JOBLIB_LAUNCHER, "n_jobs": 2}, None, False),
    (RAY, None, False),  # a cluster started here, or a new local one
    ({**RAY, "ray": {"init": {"address": "head-node:6379"}}}, None, True),
    ({**RAY, "ray": {"init": {"address": "127.0.0.1:6379"}}}, None, False),
    (RAY, "ray://10.0.0.5:10001", True),
    (RAY, "auto", False),
])
def test_launchers_that_run_jobs_on_other_machines_are_known(monkeypatch, launcher, ray_address, elsewhere):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    assert launchers.runs_jobs_elsewhere(OmegaConf.create({"launcher": launcher})) is elsewhere


def test_a_sweeps_data_is_looked_for_before_its_jobs_only_where_they_run_on_this_machine(tmp_path):
    from cifar.errors import DataError
    from cifar.sweeper import check_data

    def job(launcher: str):
        data = {"path": str(tmp_path / "nowhere"), "cache_dir": str(tmp_path), "download": False}
        return OmegaConf.create({"data": data, "hydra": {"launcher": {"_target_": launcher}}})

    check_data([job(launchers.SLURM_LAUNCHER), job(launchers.RAY_LAUNCHER)])  # their machines may hold the data
    for launcher in launchers.LAUNCHERS_HERE:
        with pytest.raises(DataError, match="No CIFAR-10 data in "):
            check_data([job(launcher)])


def test_a_slurm_sweep_where_slurm_is_not_installed_is_refused_before_any_job(cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    if shutil.which("srun"):
        pytest.skip("SLURM is installed here")
    proc = cli("hydra/launcher=submitit_slurm", "optimizer.lr=1e-3,5e-4", multirun=True, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "cifar.train: error: hydra/launcher=submitit_slurm submits the jobs to SLURM, and its srun is not on PATH "
        "here: run the sweep on the cluster's login node, or use hydra/launcher=submitit_local to run the same jobs "
        "on this machine")
    assert not (cli.tmp_path / "sweep").exists() and not all_runs(cli)  # nothing submitted, no parent run


@pytest.mark.parametrize(("address", "ray_address", "refused"), [
    ("127.0.0.1:{port}", None, "hydra.launcher.ray.init.address=127.0.0.1:{port}"),
    (None, "ray://localhost:{port}", "RAY_ADDRESS=ray://localhost:{port}"),
    (None, "auto", None),  # Ray's own search for a cluster started here
    ("head-node", None, None),  # no port: left to Ray
])
def test_a_ray_sweep_at_an_address_where_no_cluster_answers_is_refused(monkeypatch, address, ray_address, refused):
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)
    port = servers.free_port()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address.format(port=port))
    init = {"address": address.format(port=port) if address else None}
    hydra_cfg = OmegaConf.create({"launcher": {**RAY, "ray": {"init": init}}})
    if refused is None:
        launchers.check_cluster(hydra_cfg)
        return
    with pytest.raises(ConfigError) as refusal:
        launchers.check_cluster(hydra_cfg)
    host = "127.0.0.1" if address else "localhost"
    assert str(refusal.value).startswith(f"{refused.format(port=port)}: no Ray cluster answers at {host}:{port} (")
    assert str(refusal.value).endswith("): start its head (ray start --head), or correct the address")
    with socket.create_server(("127.0.0.1", port)):  # a head that answers
        launchers.check_cluster(hydra_cfg)


def test_a_slurm_sweep_with_a_store_on_this_machine_only_is_refused_before_any_job(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    fake_slurm = tmp_path / "slurm-bin"
    fake_slurm.mkdir()
    (fake_slurm / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_slurm / "srun").chmod(0o755)
    port = servers.free_port()  # nothing answers there: the refusal does not wait for it
    proc = run_on_configured_store(cli, "hydra/launcher=submitit_slurm", f"mlflow.tracking_uri=http://localhost:{port}",
                                   "optimizer.lr=1e-3,5e-4", multirun=True,
                                   PATH=f"{fake_slurm}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"cifar.train: error: mlflow.tracking_uri=http://localhost:{port} is on this machine only (localhost), and "
        "hydra/launcher=submitit_slurm runs the jobs on other machines: use an address they reach (the server's "
        "host name)")
    assert not (cli.tmp_path / "sweep").exists()  # nothing submitted


@pytest.mark.parametrize(("launcher", "warned"), [
    ({"_target_": launchers.SLURM_LAUNCHER}, ["mlflow.tracking_uri", "hydra.sweeper.storage"]),
    ({"_target_": parallel.JOBLIB_LAUNCHER, "n_jobs": 2}, []),  # processes of this machine share its files
])
def test_a_sqlite_store_with_jobs_on_other_machines_is_warned_of(caplog, launcher, warned):
    hydra_cfg = OmegaConf.create({"launcher": launcher, "runtime": {"choices": {"hydra/launcher": "some"}}})
    stores_by_setting = {"mlflow.tracking_uri": "sqlite:///mlflow.db", "hydra.sweeper.storage": "sqlite:///optuna.db",
                         "MLFLOW_TRACKING_URI": "postgresql://cifar@db-host/mlflow"}
    launchers.check_stores_reach_jobs(hydra_cfg, stores_by_setting)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split("=")[0] for w in warnings] == warned
    for setting, message in zip(warned, warnings, strict=True):
        assert message.startswith(f"{setting}={stores_by_setting[setting]} is a SQLite file, and "
                                  "hydra/launcher=some runs the jobs on other machines")


@pytest.mark.parametrize(("n_jobs", "job_nums", "gpus", "expected"), [
    (2, [0, 1, 2, 3], 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]),  # two joblib workers: a GPU each
    (None, [0, 1, 2], 2, ["cuda:0", "cuda:0", "cuda:0"]),  # one job at a time (basic launcher): the first
    (4, [0, 1, 2, 3], 1, ["cuda:0"] * 4),  # the one GPU CUDA_VISIBLE_DEVICES shows
])
def test_jobs_that_run_at_once_take_a_gpu_each(monkeypatch, n_jobs, job_nums, gpus, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    launcher = ({"_target_": parallel.JOBLIB_LAUNCHER, "n_jobs": n_jobs} if n_jobs
                else {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    devices = []
    for num in job_nums:
        hydra_cfg = OmegaConf.create({"launcher": launcher, "sweeper": {}, "job": {"num": num}})
        devices.append(str(device.resolve_device("auto", parallel.job_slot(hydra_cfg))))
    assert devices == expected


def test_a_gpu_number_beyond_those_the_machine_shows_is_one_line(monkeypatch):
    from cifar.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError) as refused:
        device.resolve_device("cuda:2")
    assert str(refused.value) == ("trainer.device=cuda:2 but this machine shows 2 GPUs, cuda:0 to cuda:1 (numbered "
                                  "as CUDA_VISIBLE_DEVICES lists them): use one of those, or trainer.device=auto")


@pytest.mark.parametrize("name", ["cpu:0", "cpu:1"])
def test_a_numbered_cpu_is_refused_before_training_as_its_checkpoints_would_not_load(name):
    from cifar.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        device.resolve_device(name)
    assert str(refused.value) == (f"trainer.device={name} numbers the CPU, which torch sees as one device of all its "
                                  f"cores (checkpoints saved on {name} would not load): use trainer.device=cpu")
    assert device.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("n_jobs", "threads", "warned"), [
    (2, "cores", True),  # two joblib workers, each with every core: twice the threads
    (2, "half", False),  # each with its share
    (None, "cores", False),  # one job at a time (basic launcher)
    (2, None, False),  # trainer.threads=null: the cores shared out (threads_per_job)
])
def test_jobs_that_run_at_once_with_more_threads_between_them_than_cores_are_warned_of(caplog, n_jobs, threads,
                                                                                        warned):
    cores = parallel.cpu_cores()
    if cores < 2 and threads == "half":
        pytest.skip("one core: no share of it")
    launcher = ({"_target_": parallel.JOBLIB_LAUNCHER, "n_jobs": n_jobs} if n_jobs
                else {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    count = {"cores": cores, "half": cores // 2, None: None}[threads]
    config = OmegaConf.create({"hydra": {"launcher": launcher, "sweeper": {}}, "trainer": {"threads": count}})
    with caplog.at_level("WARNING", logger="cifar.parallel"):
        parallel.warn_shared_threads([config, config])
    expected = (f"trainer.threads={cores} in each of the 2 jobs that run at once takes {2 * cores} threads on the "
                f"{cores} CPU cores here, which slow each other's steps: set trainer.threads={max(1, cores // 2)}, "
                f"or null (the cores shared out between the jobs)")
    assert [r.getMessage() for r in caplog.records] == ([expected] if warned else [])  # once for the sweep


@pytest.mark.parametrize(("quota", "torch_default", "n_jobs", "expected"), [
    (None, 2, None, 2),  # alone: torch's default
    (1, 2, None, 1),  # under a quota of 1 CPU that torch does not see: capped
    (None, 1, None, 1),  # OMP_NUM_THREADS=1, say: kept
    (4, 4, 2, 2),  # two joblib workers: the cores shared out
])
def test_a_job_without_trainer_threads_takes_torchs_default_capped_by_a_cpu_quota(monkeypatch, quota, torch_default,
                                                                                n_jobs, expected):
    import joblib

    monkeypatch.setattr(joblib, "cpu_count", lambda: quota or torch_default)  # joblib reads the quota (cgroup)
    assert parallel.cpu_cores() == (quota or torch_default)
    launcher = ({"_target_": parallel.JOBLIB_LAUNCHER, "n_jobs": n_jobs} if n_jobs
                else {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    hydra_cfg = OmegaConf.create({"launcher": launcher, "sweeper": {}})
    assert parallel.threads_per_job(hydra_cfg, torch_default) == expected
    if quota == 1:  # and the refusal says so in the singular
        with pytest.raises(ConfigError, match=r"^trainer.threads=2 is more than the 1 CPU core that this process "):
            parallel.check_threads(2)


def test_more_threads_than_cores_are_refused_in_one_line():
    from cifar.errors import ConfigError

    cores = parallel.cpu_cores()
    parallel.check_threads(cores)
    parallel.check_threads(None)
    with pytest.raises(ConfigError) as refused:
        parallel.check_threads(cores + 1)
    assert str(refused.value).startswith(f"trainer.threads={cores + 1} is more than the {cores} CPU cores that this "
                                         f"process may use (")
    assert str(refused.value).endswith(f"): set trainer.threads to {cores} or less, or null (all of them)")


def test_trials_that_an_error_stops_before_their_jobs_are_assigned_are_failed_by_their_sweeper(tmp_path, monkeypatch):
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    from cifar import study as studies
    from cifar.sweeper_impl import PruningOptunaSweeperImpl

    storage = studies.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage)
    sweeper = PruningOptunaSweeperImpl.__new__(PruningOptunaSweeperImpl)  # only its batch set-up
    sweeper.study_trials, sweeper.batch_started, sweeper.storage = 2, False, storage
    sweeper.pruner_cfg = OmegaConf.create({"_target_": "optuna.pruners.NopPruner"})
    sweeper.config = OmegaConf.create({"hydra": {"sweeper": {"sampler": {"seed": None}}}})
    sweeper.sampler = optuna.samplers.RandomSampler()

    def refused(*args):  # as Optuna refused a choice that changed, in the stock loop's suggestions
        raise ValueError("CategoricalDistribution does not support dynamic value space.")

    monkeypatch.setattr(OptunaSweeperImpl, "_configure_trials", refused)
    trials = [study.ask() for _ in range(2)]
    with pytest.raises(ValueError):
        sweeper._configure_trials(trials, {}, {})
    # what the sweep's error handler fails: where the trials had no sweeper yet, and stayed RUNNING for good
    assert studies.fail_killed_trials(study, storage, studies.owned_by_this_process) == [0, 1]


def test_trials_that_racing_workers_ask_beyond_n_trials_are_failed_as_surplus_and_not_run(tmp_path):
    from cifar import study as studies
    from cifar.sweeper_impl import PruningOptunaSweeperImpl, StudyFull

    storage = studies.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage)
    sweeper = PruningOptunaSweeperImpl.__new__(PruningOptunaSweeperImpl)  # only its n_trials logic
    sweeper.study_trials, sweeper.batch_started, sweeper.storage = 3, False, storage
    [study.ask() for _ in range(2)]  # one worker's batch
    racing = [study.ask() for _ in range(2)]  # another's, asked meanwhile: one trial too many
    assert sweeper._within_n_trials(study, racing) == racing[:1]
    surplus = study.trials[racing[1].number]
    assert surplus.state == optuna.trial.TrialState.FAIL and surplus.user_attrs["surplus"]
    assert len(studies.counted_trials(study)) == 3
    with pytest.raises(StudyFull):  # the next batch of either worker asks for nothing
        sweeper._ask_unless_full(study)
    assert len(study.trials) == 4
