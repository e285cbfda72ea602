"""Faults during training: a checkpoint that cannot be written, an MLflow store that is locked or
whose server restarts, a process that dies and leaves its runs RUNNING."""

from __future__ import annotations

import errno
import os
import resource
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import psutil
import pytest
import torch

from cifar import checkpoint, outages, owner, sweep_run, tracking
from cifar.errors import CheckpointError, ConfigError, UserError
from cifar.interrupts import interrupts_held
from tests.conftest import all_runs, log_shows, start, sweep_parent_and_children, wait_until
from tests.servers import free_port, serving_mlflow


def _disk_full(*_):
    """A write or fsync on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"epoch": 1, "weights": torch.ones(3)})
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last.pt \(No space left on device\)"):
        checkpoint.save(path, {"epoch": 2, "weights": torch.zeros(3)})
    assert checkpoint.load(path)["epoch"] == 1  # intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask 022", "umask 077"])
def test_a_checkpoint_written_whole_gets_the_permissions_of_a_plain_write(tmp_path, umask):
    """Not the owner-only ones of the temp file it is written to: others may need to read it (a model server)."""
    before = os.umask(umask)
    try:
        checkpoint.save(tmp_path / "best.pt", {"epoch": 1})
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(before)
    modes = {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("best.pt", "plain")}
    assert modes == {0o666 & ~umask}


def test_a_disk_that_fills_up_in_the_middle_of_a_checkpoint_is_reported_as_such(tmp_path, monkeypatch):
    """torch's zip writer turns the OSError of a failed write into an opaque RuntimeError."""
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"epoch": 1})
    open_file = os.fdopen

    def filling_up(fd, mode):
        file = open_file(fd, mode)
        written = []

        def write(data):
            if written:
                _disk_full()
            written.append(data)
            return len(data)

        file.write = write
        return file

    monkeypatch.setattr(os, "fdopen", filling_up)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last.pt \(No space left on device\)"):
        checkpoint.save(path, {"epoch": 2, "weights": torch.zeros(1000)})
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_a_run_that_cannot_write_its_checkpoint_fails_in_one_line(cli, tmp_path):
    """The file size limit stands in for a full disk: checkpoint writes fail with EFBIG."""
    from mlflow.tracking import MlflowClient

    args, env = cli.command()
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'small.db'}"  # a store far below the limit
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    client.search_experiments()  # its tables, created beforehand

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))  # below simplecnn's 2.5 MB

    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cifar.train: error: could not write checkpoint" in lines[0], proc.stderr
    assert "(File too large)" in lines[0] and "Traceback" not in proc.stderr
    [run] = client.search_runs([client.get_experiment_by_name(cli.experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert not list((tmp_path / "run").glob(".*.tmp"))


class FakeClock:
    """``time`` for :mod:`cifar.outages`: its sleeps pass at once, and are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(outages, "time", fake)
    return fake


def failing_first(*errors: Exception):
    """A call that raises ``errors`` one by one, then returns "logged"."""
    outcomes = [*errors, "logged"]

    def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call


def test_retrying_waits_out_a_store_that_fails_then_answers(clock):
    call = failing_first(*[OSError("database is locked")] * 3)
    assert outages.Retrying(60, "sqlite:///mlflow.db")(call) == "logged"
    assert clock.sleeps == [1, 2, 4]


def test_retrying_stops_with_a_store_outage_once_its_wait_is_over(clock):
    def down():
        raise ConnectionError("Connection refused")

    with pytest.raises(outages.StoreOutage) as stopped:
        outages.Retrying(200, "http://store:5000")(down)
    assert str(stopped.value) == ("the MLflow store http://store:5000 failed for 200 s (mlflow.store_wait_s; "
                                  "last error: ConnectionError: Connection refused)")
    assert clock.sleeps == [1, 2, 4, 8, 16, 32, 60, 60, 17]  # pauses up to 60 s; the last try at the end of the wait
    with pytest.raises(outages.StoreOutage):
        outages.Retrying(0, "http://store:5000")(down)
    assert len(clock.sleeps) == 9  # no wait: the first failure stops it


@pytest.mark.parametrize("when", ["during a pause", "during a try"])
def test_an_interrupt_ends_the_wait_for_a_store_at_once_even_where_interrupts_are_held(clock, monkeypatch, when):
    """The trainer holds Ctrl-C and SIGTERM while an epoch's metrics are logged, which may wait out an outage."""
    def down():
        if when == "during a try":
            signal.raise_signal(signal.SIGINT)  # held until the try is over
        raise ConnectionError("Connection refused")

    def sleep(seconds, clock_sleep=clock.sleep):
        clock_sleep(seconds)
        if when == "during a pause":
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(clock, "sleep", sleep)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's Ctrl-C, whatever the process had
    try:
        with pytest.raises(KeyboardInterrupt), interrupts_held():
            outages.Retrying(1800, "http://store:5000")(down)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert clock.sleeps == ([1] if when == "during a pause" else [])  # not the 1800 s of the wait


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2])
def test_a_held_signal_reaches_its_handler_once_the_block_ends(number):
    """SIGUSR2 is submitit's requeue signal: its handler ends the job, which is requeued."""
    received = []
    previous = signal.signal(number, lambda n, _frame: received.append(n))
    try:
        with interrupts_held():
            signal.raise_signal(number)
            assert received == []  # the call in the block is not cut
        assert received == [number]
    finally:
        signal.signal(number, previous)


def test_an_outage_that_stopped_a_job_in_a_process_of_its_own_is_found_in_its_launchers_error():
    submitit = pytest.importorskip("submitit", reason="uv sync --extra submitit")

    outage = ("the MLflow store http://mlflow-host:5000 failed for 3 s (mlflow.store_wait_s; last error: "
              "MlflowException: API request to http://mlflow-host:5000/api/2.0/mlflow/runs/log-batch failed)")
    # as submitit reported it here: the job's stderr, whose traceback ends with the outage
    reported = submitit.core.utils.UncompletedJobError(
        "Job 19482 (task: 0) with path /sweep/.submitit/19482/19482_0_result.pkl\n"
        "has not produced any output (state: FINISHED)\nError stream produced:\n" + "-" * 40 + "\n"
        "Traceback (most recent call last):\n  File \"/project/cifar/outages.py\", line 66, in __call__\n"
        f"    raise StoreOutage(f\"the MLflow store {{self.store}} failed\")\ncifar.outages.StoreOutage: {outage}\n")
    found = outages.store_outage(reported)
    assert isinstance(found, outages.StoreOutage) and str(found) == outage
    assert outages.store_outage(RuntimeError("a job failed: ValueError: bad value")) is None
    assert outages.store_outage(RuntimeError("StoreOutage: the word, not the job's last line")) is None
    assert outages.store_outage(found) is found and outages.store_outage(None) is None  # an outage of this process


def test_a_request_the_store_refuses_is_raised_at_once_and_one_it_cannot_answer_now_is_retried(clock):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED, TEMPORARILY_UNAVAILABLE

    refused = MlflowException("Invalid value for metric 'val/acc'", error_code=INVALID_PARAMETER_VALUE)
    with pytest.raises(MlflowException, match="Invalid value"):
        outages.Retrying(600, "http://store:5000")(failing_first(refused))
    assert clock.sleeps == []
    busy = [MlflowException("rate limited", error_code=REQUEST_LIMIT_EXCEEDED),
            MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)]
    assert outages.Retrying(600, "http://store:5000")(failing_first(*busy)) == "logged" and clock.sleeps == [1, 2]


def test_inside_a_try_mlflow_sends_a_request_once_unless_the_user_set_its_retries(monkeypatch, caplog):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv(outages.MLFLOW_RETRIES_VAR, raising=False)
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # refused
    with pytest.raises(MlflowException, match="Connection refused"), outages.one_request_a_try():
        client.log_metric("0" * 32, "val/acc", 0.5)  # MLflow's 7 retries would take about 4 minutes
    assert not [r for r in caplog.records if r.getMessage().startswith("Retrying (")]  # urllib3's, before a retry
    assert outages.MLFLOW_RETRIES_VAR not in os.environ
    monkeypatch.setenv(outages.MLFLOW_RETRIES_VAR, "3")
    with outages.one_request_a_try():
        assert os.environ[outages.MLFLOW_RETRIES_VAR] == "3"


def test_a_run_ends_when_the_store_fails_to_record_its_end_at_first(tracking_uri, monkeypatch, clock):
    """``mlflow.end_run`` forgets the run before it tells the store: tried again, it would do nothing."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    record_end = MlflowClient.set_terminated
    failures = [OSError("connection reset")]

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return record_end(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_terminated", flaky)
    with tracking.job_run("ends", None, {}, outages.Retrying(60, tracking_uri)) as run:
        pass
    assert clock.sleeps == [1] and mlflow.active_run() is None
    assert MlflowClient(tracking_uri).get_run(run.info.run_id).info.status == "FINISHED"


def test_what_a_run_logs_as_it_starts_is_tried_again_whole_in_an_outage(tracking_uri, monkeypatch, clock, tmp_path):
    """Before, these calls ran outside ``Retrying``: an outage as a job started held it in MLflow's own retries
    (about 4 minutes), then failed it with a traceback."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from cifar import task

    mlflow.set_tracking_uri(tracking_uri)
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    log_dict = mlflow.log_dict
    failures = [OSError("connection refused")]  # after the params and the config are logged

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop()
        return log_dict(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_dict", flaky)
    retrying = outages.Retrying(60, tracking_uri)
    with tracking.job_run("starts", None, {}, retrying) as run:
        dataset = tracking.dataset_input("cifar10", str(tmp_path), "f" * 64)
        retrying(task._log_run_inputs, {"optimizer.lr": "0.001"}, dataset, tmp_path, {"content_hash": "x"}, "layers")
    assert clock.sleeps == [1]
    run = MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"optimizer.lr": "0.001"}
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == ["f" * 12]  # logged once, though twice sent
    logged = {a.path for d in ("hydra", "data", "model") for a in MlflowClient(tracking_uri).list_artifacts(
        run.info.run_id, d)}
    assert {"hydra/config.yaml", "data/stats.json", "model/summary.txt"} <= logged


def test_a_sweep_job_that_finds_its_store_down_as_it_starts_waits_for_it_and_then_stops_the_sweep(
        monkeypatch, caplog, clock):
    """A job that reaches its first MLflow call after the store stopped answering (its data took a while to
    load): before, that call ran outside ``Retrying``, in MLflow's own 7 retries (about 4 minutes), and then
    failed the job with a traceback instead of stopping the sweep to be resumed."""

    monkeypatch.delenv(outages.MLFLOW_RETRIES_VAR, raising=False)
    url = f"http://127.0.0.1:{free_port()}"  # refused
    with pytest.raises(outages.StoreOutage, match=rf"the MLflow store {url} failed for 10 s "):
        tracking.use_experiment(url, "sweep", outages.Retrying(10, url))
    assert clock.sleeps == [1, 2, 4, 3]
    assert not [r for r in caplog.records if r.getMessage().startswith("Retrying (")]  # urllib3's, before a retry
    monkeypatch.setenv(outages.MLFLOW_RETRIES_VAR, "0")  # MLflow's retries: not this test's
    with pytest.raises(UserError, match=rf"^MLflow tracking store {url} cannot be used \(MlflowException: "):
        tracking.use_experiment(url, "run")  # a single run's store answered as it started: refused, not waited for


@pytest.mark.parametrize(("stopped_by", "status"), [
    (KeyboardInterrupt(), "KILLED"),  # Ctrl-C, SIGTERM (cifar.train's handler), a Ray job's ray.cancel
    (SystemExit("The process receives a SIGTERM."), "KILLED"),  # a Ray worker's SIGTERM handler, as Ray stops it
    (ValueError("bad value"), "FAILED"),
])
def test_a_run_stopped_by_an_interrupt_or_an_exit_ends_killed_and_one_stopped_by_an_error_failed(
        tracking_uri, stopped_by, status):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    with pytest.raises(type(stopped_by)):
        with tracking.job_run("stopped", None, {}, outages.Retrying(60, tracking_uri)) as run:
            raise stopped_by
    assert MlflowClient(tracking_uri).get_run(run.info.run_id).info.status == status


# Ctrl-C while the run imports torch: the first seconds of a run (a sitecustomize.py raises it in that import)
INTERRUPTED_IMPORT = """
import importlib.abc, sys

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch.nn":
            sys.meta_path.remove(self)
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
"""


def test_ctrl_c_while_a_run_imports_torch_is_one_line_and_status_130(cli):
    """Saying how to continue imported torch again, half-imported: a traceback, or a segmentation fault."""
    (cli.tmp_path / "interrupt").mkdir()
    (cli.tmp_path / "interrupt" / "sitecustomize.py").write_text(INTERRUPTED_IMPORT)
    args, env = cli.command()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cli.tmp_path / "interrupt"), env.get("PYTHONPATH")]))
    proc = subprocess.run(args, cwd=cli.tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("cifar.train: interrupted by SIGINT: "), proc.stderr


def test_an_interrupt_during_an_outage_stops_the_run_within_a_minute_and_is_what_is_reported(
        tracking_uri, monkeypatch, clock):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)

    def down(self, *args, **kwargs):
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    with pytest.raises(KeyboardInterrupt):
        with tracking.job_run("interrupted", None, {}, outages.Retrying(1800, tracking_uri)):
            raise KeyboardInterrupt
    assert sum(clock.sleeps) == tracking.STOPPED_RUN_WAIT_S  # not the 1800 s of a run that goes on
    assert mlflow.active_run() is None  # else MLflow would end it at exit, with its own minutes of retries


def test_a_sweep_stopped_while_its_store_is_down_ends_without_mlflow_own_retries(monkeypatch, caplog):
    """After Ctrl-C, Hydra calls on_multirun_end, whose MLflow calls would each retry for minutes."""
    from omegaconf import OmegaConf

    monkeypatch.delenv(outages.MLFLOW_RETRIES_VAR, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # MLflow's retries, were they made: at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # refused
    callback = sweep_run.SweepCallback()
    callback.parent_run_id = "0" * 32
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:  # Hydra calls it in a finally
        callback.on_multirun_end(OmegaConf.create({"mlflow": {"register_model": False}, "hydra": {}}))
    assert not [r for r in caplog.records if r.getMessage().startswith("Retrying (")]  # urllib3's, before a retry
    assert f"MLflow parent run {'0' * 32} not summarised (MlflowException: " in caplog.text


@pytest.mark.parametrize("jobs", [0, 1])
def test_a_sweep_whose_jobs_logged_no_run_under_its_parent_says_where_they_look(tracking_uri, monkeypatch, caplog,
                                                                              tmp_path, jobs):
    """As a Ray sweep did whose jobs ran in another directory: they returned, and their runs were not the sweep's."""
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(f"{tmp_path.name}-{jobs}")
    parent = client.create_run(experiment_id)
    for _ in range(jobs):
        child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id})
        client.set_terminated(child.info.run_id, "FINISHED")
    callback = sweep_run.SweepCallback()
    callback.parent_run_id = parent.info.run_id
    callback.on_multirun_end(OmegaConf.create({"mlflow": {"register_model": False},
                                               "hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert client.get_run(parent.info.run_id).info.status == ("FINISHED" if jobs else "FAILED")
    warning = (f"MLflow parent run {parent.info.run_id} ended FAILED: none of the sweep's jobs logged a run under "
               f"it. A job reads the parent's id in {tmp_path / tracking.SWEEP_FILE} and logs to the sweep's store")
    assert (warning in caplog.text) == (jobs == 0)


@pytest.mark.slow
def test_a_tracking_server_that_restarts_mid_training_costs_no_epoch(cli, tmp_path):
    store, port = f"sqlite:///{tmp_path}/s.db", free_port()
    with serving_mlflow(store, port, tmp_path / "server-1.log", tmp_path) as url:
        proc = start(cli, "trainer.epochs=20", MLFLOW_TRACKING_URI=url)
        wait_until(proc, log_shows(cli.tmp_path / "run", "epoch 1/20"), interval=0.01)
    time.sleep(5)  # down: the run's next MLflow call is refused until the server is back
    with serving_mlflow(store, port, tmp_path / "server-2.log", tmp_path):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "Connection refused" in stderr + stdout  # the outage was met, and waited out
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=url)
        [run] = client.search_runs([client.get_experiment_by_name(cli.experiment).experiment_id])
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc")) == list(range(1, 21))


@pytest.mark.slow
def test_a_tracking_server_down_longer_than_the_wait_stops_the_run_in_one_line_to_resume(cli, tmp_path):
    from mlflow.tracking import MlflowClient

    store, port = f"sqlite:///{tmp_path}/s.db", free_port()
    with serving_mlflow(store, port, tmp_path / "server-1.log", tmp_path) as url:
        proc = start(cli, "trainer.epochs=12", "mlflow.store_wait_s=3", MLFLOW_TRACKING_URI=url)
        client = MlflowClient(tracking_uri=url)

        def first_epoch_logged() -> bool:
            experiment = client.get_experiment_by_name(cli.experiment)
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            return bool(runs) and "val/acc" in runs[0].data.metrics

        wait_until(proc, first_epoch_logged, interval=0.05)
    stdout, stderr = proc.communicate(timeout=120)  # the server is down for good
    assert proc.returncode == 75, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"cifar.train: error: the MLflow store {url} failed for 3 s (mlflow.store_wait_s; "
                           "last error: MlflowException: API request to "), line
    assert "Connection refused" in line and "the last epoch's checkpoint (last.pt) is kept; continue with: " in line
    command = shlex.split(line.split("continue with: ")[1])
    assert command[:3] == ["python", "-m", "cifar.train"] and "trainer.resume=true" in command
    command[command.index("mlflow.store_wait_s=3")] = "mlflow.store_wait_s=60"  # not what it trains: may change
    assert (cli.tmp_path / "run" / "last.pt").exists()
    with serving_mlflow(store, port, tmp_path / "server-2.log", tmp_path):
        _, env = cli.command()
        resumed = subprocess.run([sys.executable, *command[1:]], cwd=cli.tmp_path, capture_output=True, text=True,
                                 env={**env, "MLFLOW_TRACKING_URI": url}, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        [run] = client.search_runs([client.get_experiment_by_name(cli.experiment).experiment_id])
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics  # the same run, taken up again
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc")) == list(range(1, 13))


@pytest.mark.slow
def test_a_submitit_sweep_whose_store_stays_down_stops_in_one_line_and_resumes(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="uv sync --extra submitit")
    from mlflow.tracking import MlflowClient

    store, port = f"sqlite:///{tmp_path}/s.db", free_port()
    sweep = ("hydra/launcher=submitit_local", "optimizer.lr=1e-3,5e-4", "trainer.epochs=12", "mlflow.store_wait_s=3")
    with serving_mlflow(store, port, tmp_path / "server-1.log", tmp_path) as url:
        proc = start(cli, *sweep, multirun=True, MLFLOW_TRACKING_URI=url)
        client = MlflowClient(tracking_uri=url)

        def a_job_logged_an_epoch() -> bool:
            experiment = client.get_experiment_by_name(cli.experiment)
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            return any("val/acc" in run.data.metrics for run in runs)

        wait_until(proc, a_job_logged_an_epoch, interval=0.05)
    _, stderr = proc.communicate(timeout=180)  # the server is down for good
    # submitit reports the jobs' outage as its own error, with their tracebacks: the sweep says it as a local one
    assert proc.returncode == 75, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"cifar.train: error: the MLflow store {url} failed for 3 s (mlflow.store_wait_s; "), line
    command = shlex.split(line.split("; continue with: ")[1])
    assert "trainer.resume=true" in command and f"hydra.sweep.dir={cli.tmp_path / 'sweep'}" in command
    command[command.index("mlflow.store_wait_s=3")] = "mlflow.store_wait_s=60"
    with serving_mlflow(store, port, tmp_path / "server-2.log", tmp_path):
        _, env = cli.command()
        resumed = subprocess.run([sys.executable, *command[1:]], cwd=cli.tmp_path, capture_output=True, text=True,
                                 env={**env, "MLFLOW_TRACKING_URI": url}, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        runs = client.search_runs([client.get_experiment_by_name(cli.experiment).experiment_id])
    parent, children = sweep_parent_and_children(runs)  # the same runs, taken up again
    assert [r.info.status for r in (parent, *children)] == ["FINISHED"] * 3
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.0005", "0.001"]


@pytest.mark.slow
def test_a_locked_mlflow_store_is_retried_and_the_run_finishes(cli, tmp_path):
    """A writer holds the SQLite store's lock past MLflow's 20 s busy timeout, mid-training."""
    db = tmp_path / "locked.db"
    proc = start(cli, "trainer.epochs=4", MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    wait_until(proc, log_shows(cli.tmp_path / "run", "epoch 1/4"), interval=0.01)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    time.sleep(26)
    lock.execute("COMMIT")
    lock.close()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "MLflow store unavailable" in stderr + stdout and "retrying in" in stderr + stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    [run] = client.search_runs([client.get_experiment_by_name(cli.experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 4  # no epoch lost


def gone_from_here() -> str:
    """The owner (:func:`cifar.owner.current`) of a process of this machine that has ended."""
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    host, _, _ = owner.current().split(":")
    return f"{host}:{child.pid}:0.00"


def test_owner_tells_a_live_process_from_a_gone_one():
    assert not owner.is_gone(owner.current())
    host, pid, _ = owner.current().split(":")
    started = psutil.Process(int(pid)).create_time()  # as owners elsewhere than Linux, or older ones
    # the start time a second off, as after the system clock was set since: psutil moves every start time with it
    assert not owner.is_gone(f"{host}:{pid}:{started + 1:.2f}")
    assert owner.is_gone(f"{host}:{pid}:{started - 10:.2f}")  # another process that had this pid before
    gone = gone_from_here()
    assert owner.is_gone(gone)  # no such process now (or another one since)
    _, pid, started = gone.split(":")
    assert not owner.is_gone(f"another-host:{pid}:{started}")  # cannot be seen from here: left alone
    assert not owner.is_gone("")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the start since boot is read from Linux's /proc")
def test_a_live_process_is_not_gone_after_the_system_clock_is_set(monkeypatch, tmp_path):
    import psutil._pslinux

    live = owner.current()
    real_boot_time = psutil._pslinux.boot_time
    for step in (-3600.0, 5.0):  # psutil's start times move with a clock set since, by NTP or on a VM's resume
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda step=step: real_boot_time() + step)
        assert not owner.is_gone(live)
    host, pid, started = live.split(":")
    boot, since_boot = started.split("+")
    assert owner.is_gone(f"{host}:{pid}:{boot}+{float(since_boot) - 10:.2f}")  # another process that had this pid
    other_boot = f"{int(boot, 16) ^ 1:08x}"
    assert owner.is_gone(f"{host}:{pid}:{other_boot}+{since_boot}")  # the same pid and start, before a restart
    monkeypatch.setattr(owner, "BOOT_ID_FILE", tmp_path / "none")  # a kernel that gives no boot id
    owner._boot_id.cache_clear()
    try:
        assert not owner.is_gone(f"{host}:{pid}:+{since_boot}")
        assert owner.is_gone(f"{host}:{pid}:+{float(since_boot) - 10:.2f}")
    finally:
        owner._boot_id.cache_clear()


LOKY = ("A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation "
        "fault while calling the function or by an excessive memory usage causing the Operating System to kill the "
        "worker.\n\nThe exit codes of the workers are {%s}\nDetailed tracebacks of the workers should have been "
        "printed to stderr in the executor process if faulthandler was not disabled.")  # joblib's, as a sweep got it


SUBMITIT = ("Job 6065 (task: 0) with path /w/sweep/.submitit/6065/6065_0_result.pkl\nhas not produced any output "
            "(state: OUT_OF_MEMORY)\nNo error stream produced. Look at stdout: /w/sweep/.submitit/6065/6065_0_log.out")


@pytest.mark.parametrize("lost, said", [
    (("loky", "SIGKILL(-9)"), "a worker process of the launcher was killed (exit codes {SIGKILL(-9)}), as the system "
     "kills one where it runs out of memory (fewer jobs at once need less: hydra.launcher.n_jobs)"),
    (("loky", "SIGSEGV(-11)"), "a worker process of the launcher ended abruptly (exit codes {SIGSEGV(-11)})"),
    (("pool", "A process in the process pool was terminated abruptly while the future was running or pending."),
     "a worker process of the launcher ended abruptly (A process in the process pool was terminated abruptly while "
     "the future was running or pending.)"),  # the standard library's pool
    (("submitit", SUBMITIT), "submitit job 6065 ended without a result (state: OUT_OF_MEMORY), as a job that is killed "
     "(out of memory, say) or cancelled does; its logs are in /w/sweep/.submitit/6065"),
    (("ray", "WorkerCrashedError"), "Ray lost a job's process, and had tried it as often as it may (The worker died "
     "unexpectedly while executing this task. Check python-core-worker-*.log files for more information.): "
     "+hydra.launcher.ray.remote.max_retries=N gives each job N more tries"),
    (("ray", "OutOfMemoryError"), "Ray lost a job's process, and had tried it as often as it may (Task was killed due "
     "to the node running low on memory.): +hydra.launcher.ray.remote.max_retries=N gives each job N more tries"),
])
def test_a_jobs_process_that_the_launcher_lost_is_said_with_how_it_ended(lost, said):
    from concurrent.futures.process import BrokenProcessPool

    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from cifar.launchers import lost_job

    kind, text = lost
    if kind == "ray":
        ray = pytest.importorskip("ray.exceptions", reason="uv sync --extra ray")
        err = (ray.WorkerCrashedError() if text == "WorkerCrashedError" else  # as Ray words them
               ray.OutOfMemoryError("Task was killed due to the node running low on memory.\nMemory on the node ..."))
        assert lost_job(err) == said
        text = str(err)
    elif kind == "submitit":
        submitit = pytest.importorskip("submitit.core.utils", reason="uv sync --extra submitit")
        assert lost_job(submitit.UncompletedJobError(text)) == said
        assert lost_job(submitit.FailedJobError(text)) is None  # the job's own error, which it reports itself
    else:
        assert lost_job(TerminatedWorkerError(LOKY % text) if kind == "loky" else BrokenProcessPool(text)) == said
    assert lost_job(RuntimeError(text)) is None  # any other error: not a lost job


def test_a_sweep_that_submitit_lost_a_job_of_ends_that_jobs_run_wherever_it_ran(tracking_uri, monkeypatch, tmp_path):
    """A SLURM job killed out of memory ran on another machine, whose processes cannot be seen from here: its run,
    left RUNNING, was refused by the job of the continued sweep (still RUNNING, in a process that is gone)."""
    submitit = pytest.importorskip("submitit.core.utils", reason="uv sync --extra submitit")
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from cifar.launchers import SUBMITIT_JOB_TAG

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(tmp_path.name)
    parent = client.create_run(experiment_id)
    jobs = {  # the owner and submitit job of each job's run, and how the sweep leaves it
        "lost": ("node-17:1234:1.00", "6065", "KILLED"),  # the job that submitit lost
        "running elsewhere": ("node-18:1234:1.00", "6066", "RUNNING"),  # another job of the batch, on its node
        "gone from here": (gone_from_here(), "6067", "KILLED"),
    }
    runs = {name: client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id,
                                                         tracking.OWNER_TAG: by, SUBMITIT_JOB_TAG: job_id})
            for name, (by, job_id, _) in jobs.items()}
    callback = sweep_run.SweepCallback()
    callback.parent_run_id = parent.info.run_id
    try:
        raise submitit.UncompletedJobError(SUBMITIT)  # job 6065's
    except submitit.UncompletedJobError:  # Hydra calls it in a finally
        callback.on_multirun_end(OmegaConf.create({"mlflow": {"register_model": False}, "hydra": {}}))
    assert {name: client.get_run(run.info.run_id).info.status for name, run in runs.items()} == {
        name: status for name, (_, _, status) in jobs.items()}
    assert client.get_run(parent.info.run_id).info.status == "KILLED"


def test_a_run_left_running_by_a_gone_process_is_taken_up_and_one_of_a_live_process_refused(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(owner, "_declared_gone", set())

    def running(by: str) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(status="RUNNING", run_id="r1"),
                               data=SimpleNamespace(tags={tracking.OWNER_TAG: by}))

    elsewhere = "another-host:1234:1.00"
    for live in (owner.current(), elsewhere):
        with pytest.raises(ConfigError, match=r"^trainer.resume=true but MLflow run r1 is still RUNNING, in process "):
            tracking.refuse_running(running(live), "MLflow run")
    tracking.refuse_running(running(gone_from_here()), "MLflow run")  # gone
    owner.declare_gone(elsewhere)  # as a Ray job does of its task's lost attempt, on whatever machine it ran
    assert owner.is_gone(elsewhere)
    tracking.refuse_running(running(elsewhere), "MLflow run")


@pytest.mark.slow
def test_a_run_left_running_by_a_killed_process_is_ended_killed_by_the_next_run(cli):
    proc = start(cli, "trainer.epochs=500")
    wait_until(proc, log_shows(cli.tmp_path / "run", "epoch 1/500"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [killed] = all_runs(cli)
    assert killed.info.status == "RUNNING"  # nothing could end it
    cli("trainer.epochs=1", f"hydra.run.dir={cli.tmp_path / 'next'}")
    statuses = {r.info.run_id: r.info.status for r in all_runs(cli)}
    assert statuses.pop(killed.info.run_id) == "KILLED" and list(statuses.values()) == ["FINISHED"]


def test_a_background_write_copies_its_tensors_when_submitted(tmp_path):
    weights = torch.zeros(4_000_000)
    with checkpoint.Writer() as writer:
        writer.submit({tmp_path / "last.pt": {"weights": weights}})
        weights.add_(1)  # the next epoch's training, while the file is written
    assert torch.count_nonzero(checkpoint.load(tmp_path / "last.pt")["weights"]) == 0


def test_a_failed_background_write_raises_at_the_next_submit_or_at_the_end(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"epoch": 1})
    monkeypatch.setattr(os, "fsync", _disk_full)
    for then in ("submit", "end"):
        with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last.pt \(No space left"):
            with checkpoint.Writer() as writer:
                writer.submit({path: {"epoch": 2}})  # fails in the background
                if then == "submit":
                    writer.submit({path: {"epoch": 3}})
                    pytest.fail("the second submit did not raise the first one's error")
        assert checkpoint.load(path)["epoch"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_interrupt_waits_for_the_write_in_flight_and_is_not_hidden_by_its_error(tmp_path, monkeypatch, caplog):
    with pytest.raises(KeyboardInterrupt):
        with checkpoint.Writer() as writer:
            writer.submit({tmp_path / "last.pt": {"weights": torch.ones(4_000_000)}})
            raise KeyboardInterrupt
    assert checkpoint.load(tmp_path / "last.pt")["weights"].sum() == 4_000_000  # landed, whole

    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(KeyboardInterrupt):
        with checkpoint.Writer() as writer:
            writer.submit({tmp_path / "last.pt": {"weights": torch.zeros(3)}})
            raise KeyboardInterrupt
    assert "could not write checkpoint" in caplog.text
    assert checkpoint.load(tmp_path / "last.pt")["weights"].sum() == 4_000_000
