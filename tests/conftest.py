from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests import fakedata

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session", autouse=True)
def temp_dir(tmp_path_factory) -> Iterator[Path]:
    """The temp dir of the tests and of the processes they start (the lock files of ``cifar.files``, MLflow's
    downloads and locks): one in pytest's own, which it clears after a few sessions. In /tmp, the lock files of
    each session's new paths piled up by the thousand. The tests also run in a dir of pytest's: an MLflow
    experiment made in a store of a test keeps its runs' files in ``./mlruns``, which was the checkout's."""
    temp = tmp_path_factory.mktemp("temp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(temp))
        patch.setattr(tempfile, "tempdir", str(temp))
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield temp


@pytest.fixture(autouse=True)
def mlflow_globals_put_back() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` (a test's own, or ``cifar.tracking.use_experiment``
    called in the test's process) set globals of the process and MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID: these
    are put back after each test. Before, a test that reads MLflow's default store (``./mlflow.db``) read the one an
    earlier test on the same worker had set, and the runs that later tests start inherited both variables."""
    before = {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}
    yield
    mlflow = sys.modules.get("mlflow")  # not imported: nothing was set
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
    for name in [name for name in os.environ if name.startswith("MLFLOW_")]:
        del os.environ[name]
    os.environ.update(before)


@pytest.fixture(scope="session")
def official_dir(tmp_path_factory) -> Path:
    return fakedata.write_official(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="session")
def official_archive(official_dir, tmp_path_factory) -> Path:
    return fakedata.tar_gz(official_dir, tmp_path_factory.mktemp("official-tar") / "cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def folders_dir(tmp_path_factory) -> Path:
    return fakedata.write_image_folders(tmp_path_factory.mktemp("folders"))


@pytest.fixture(scope="session")
def folders_archive(folders_dir, tmp_path_factory) -> Path:
    return fakedata.tar_gz(folders_dir, tmp_path_factory.mktemp("folders-tar") / "fake-cifar.tar.gz")


@pytest.fixture(scope="session")
def real_data_cache(tmp_path_factory) -> Path:
    """A cache dir holding the decoded real copy, shared by the tests that use it."""
    if not REAL_DATA.exists():
        pytest.skip("real CIFAR-10 copy not present at ../shared/data/cifar10-jpeg.tar.gz")
    from cifar.data import load_cifar10

    cache = tmp_path_factory.mktemp("real-cache")
    load_cifar10(REAL_DATA, cache, download=False)
    return cache


# Small, fast runs on the fake data: 160 train / 40 val images, 2 epochs of 5 batches. No model is
# logged (torch.export costs each process ~6 s): tests/test_predict.py checks the logged model.
FAST = [
    "mlflow.log_model=false",
    "data.val_size=40",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.epochs=2",
    "trainer.device=cpu",
    "data.download=false",
]


def with_overrides(defaults: list[str], overrides: tuple[str, ...]) -> list[str]:
    """``defaults`` with any key that ``overrides`` sets replaced, so that each key is given once."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [d for d in defaults if d.split("=", 1)[0] not in keys] + list(overrides)


def train_command(data: Path, workdir: Path, *overrides: str, multirun: bool = False,
                  experiment: str | None = None) -> list[str]:
    """``python -m cifar.train`` on ``data`` with the FAST settings, its data cache and outputs under ``workdir``."""
    defaults = [f"data.path={data}", f"data.cache_dir={workdir / 'cache'}",
                *([f"mlflow.experiment={experiment}"] if experiment else []), *FAST,
                f"hydra.sweep.dir={workdir / 'sweep'}" if multirun else f"hydra.run.dir={workdir / 'run'}"]
    return [sys.executable, "-m", "cifar.train", *(["-m"] if multirun else []), *with_overrides(defaults, overrides)]


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the session (creating its tables takes seconds); tests use own experiments."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


CALLBACK_FAILED = re.compile(r"UserWarning: Callback \w+\.\w+ raised")
# A run's warning where its hydra.run.dir holds an earlier run's checkpoints
WRITES_OVER = "this run writes over them (that run's MLflow run and logged model stay)"


@pytest.fixture
def cli(request, tmp_path, official_dir, tracking_uri):
    """Run ``python -m cifar.train`` in a temp dir, into an MLflow experiment of the test's own."""
    experiment = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name) + f"-{id(request)}"

    def command(*overrides: str, multirun: bool = False, data: Path = official_dir) -> tuple[list[str], dict]:
        """The command line and environment of a run (for tests that start and signal it themselves)."""
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
        env.pop("HYDRA_FULL_ERROR", None)
        return train_command(data, tmp_path, *overrides, multirun=multirun, experiment=experiment), env

    def run(*overrides: str, multirun: bool = False, data: Path = official_dir, check: bool = True):
        args, env = command(*overrides, multirun=multirun, data=data)
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        # Hydra turns a callback's exception into a warning and goes on: the callback's work is undone
        assert CALLBACK_FAILED.search(proc.stderr) is None, proc.stderr
        return proc

    run.command = command
    run.tracking_uri = tracking_uri
    run.experiment = experiment
    run.tmp_path = tmp_path
    return run


def load_study(cli, name: str | None = None):
    """The study ``name`` (the Optuna presets': named after the test's MLflow experiment), in optuna.db
    in the working directory."""
    import optuna

    name = name or f"{cli.experiment}-optuna"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cli.tmp_path / 'optuna.db'}")


def run_on_configured_store(cli, *overrides: str, multirun: bool = False, **env: str) -> subprocess.CompletedProcess:
    """``cli(*overrides)`` without ``MLFLOW_TRACKING_URI``, which would win over ``mlflow.tracking_uri``
    (``env``: variables to set too)."""
    args, environ = cli.command(*overrides, multirun=multirun)
    del environ["MLFLOW_TRACKING_URI"]
    return subprocess.run(args, cwd=cli.tmp_path, env={**environ, **env}, capture_output=True, text=True, timeout=300)


def run_without_module(cli, module: str, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """:func:`run_on_configured_store` with ``module`` unimportable, as if it were not installed."""
    hidden = cli.tmp_path / f"without-{module}"
    (hidden / module).mkdir(parents=True)
    (hidden / module / "__init__.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    pythonpath = os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))
    return run_on_configured_store(cli, *overrides, multirun=multirun, PYTHONPATH=pythonpath)


# Nothing listens on port 1: the connection is refused. The password is one that no message may show.
REFUSING_DATABASE = "postgresql://cifar:s3cret@127.0.0.1:1/{}"


def unreadable_database(problem: str, monkeypatch) -> str:
    """Make the PostgreSQL databases of REFUSING_DATABASE unreadable for ``problem``; return how it is said."""
    if problem == "no driver":
        monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
        return "cannot be read: its database driver is not installed ("
    pytest.importorskip("psycopg", reason="the postgres extra is not installed (uv sync --extra postgres)")
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)  # tried once, not for 8 s
    return "cannot be read: nothing answers at 127.0.0.1:1 (Connection refused): start its server, or correct the URL"


def client_for(cli):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cli.tracking_uri)


def all_runs(cli) -> list:
    """Every run of the test's own MLflow experiment."""
    client = client_for(cli)
    experiment = client.get_experiment_by_name(cli.experiment)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def sweep_parent_and_children(runs: list) -> tuple:
    """The one parent run among a sweep's ``runs``, and its children (every other run)."""
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return parent, children


def assert_tags_are_the_runs_own(*runs, given: tuple[str, ...] = ()) -> None:
    """Every tag of ``runs``, but those ``given`` by mlflow.tags, is one that mlflow.tags is refused: a tag that the
    runs set and :func:`cifar.tracking.is_own_tag` misses could be set by a user's, and replaced."""
    from cifar.tracking import is_own_tag

    for run in runs:
        missed = sorted(key for key in run.data.tags if key not in given and not is_own_tag(key))
        assert not missed, f"{run.info.run_name}: {missed}"


def signal_process_of(run, signum: int) -> None:
    """Send ``signum`` to the process that runs ``run`` (its owner tag: ``host:pid:start time``)."""
    from cifar.tracking import OWNER_TAG

    os.kill(int(run.data.tags[OWNER_TAG].split(":")[1]), signum)


def start(cli, *overrides: str, multirun: bool = False, **env: str) -> subprocess.Popen:
    """``python -m cifar.train`` started in the background (``env``: variables to set too), its output piped."""
    args, environ = cli.command(*overrides, multirun=multirun)
    return subprocess.Popen(args, cwd=cli.tmp_path, env={**environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], interval: float = 0.02, timeout: float = 300) -> None:
    """Poll ``ready()`` until it holds; fail where ``proc`` ends first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, f"not ready after {timeout} s"
        time.sleep(interval)


def log_shows(run_dir: Path, text: str) -> Callable[[], bool]:
    """Whether the log of the run in ``run_dir`` shows ``text`` yet."""
    return lambda: any(text in log.read_text() for log in run_dir.glob("*.log"))


def running_trial(study, storage, sweeper: str, heartbeat: bool) -> int:
    """A trial asked for in ``study`` as the sweeper ``sweeper`` (cifar.owner) would, with a heartbeat or not."""
    from cifar.study import OWNER_ATTR

    trial = study.ask()
    trial.set_user_attr(OWNER_ATTR, sweeper)
    if heartbeat:
        storage.record_heartbeat(trial._trial_id)
    return trial.number


def backdate_heartbeat(db: Path, trial_number: int, seconds: int) -> None:
    """Make the last heartbeat of a trial in ``db``, a SQLite storage of one study, ``seconds`` old (as if its
    sweeper had stopped beating then)."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = "
            "(SELECT trial_id FROM trials WHERE number = ?)", (f"-{seconds} seconds", trial_number))


def unlistable(monkeypatch, folder: Path) -> None:
    """Make listing ``folder`` fail as it does without the read permission, which root (who runs the tests here) is
    never refused: ``Path.iterdir`` and ``os.scandir`` (``os.walk``'s) raise PermissionError for it."""
    iterdir, scandir = Path.iterdir, os.scandir

    def refused(path) -> None:
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "iterdir", lambda path: refused(path) or iterdir(path))
    monkeypatch.setattr(os, "scandir", lambda path=".": refused(path) or scandir(path))
