"""Runs and sweeps started at once, as by a script: each gets an output dir of its own, a new SQLite store is set
up once for all of them, and new data is decoded once."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from cifar.output_dirs import make_output_dir
from tests.conftest import all_runs

SAME_SECOND = "${now:%Y}"  # a time-named dir that any two runs of a test share


def hydra_config(mode: str, template: str):
    setup_globals()  # Hydra's resolvers, `now` among them
    return OmegaConf.create({"hydra": {mode: {"dir": template}, "overrides": {"hydra": ["hydra.verbose=false"]}}})


def test_a_time_named_dir_made_already_is_left_to_its_maker_and_the_next_free_one_is_taken(tmp_path):
    template = f"{tmp_path}/multirun/{SAME_SECOND}"
    first, second, third = (hydra_config("sweep", template) for _ in range(3))
    assert make_output_dir(first, "sweep") == tmp_path / "multirun"  # the topmost folder made
    year = first.hydra.sweep.dir.rsplit("/", 1)[1]
    (tmp_path / "multirun" / year / "mlflow_sweep.json").write_text("{}")  # the first sweep's
    assert make_output_dir(second, "sweep") == tmp_path / "multirun" / f"{year}_2"
    assert make_output_dir(third, "sweep") == tmp_path / "multirun" / f"{year}_3"
    assert [c.hydra.sweep.dir for c in (first, second, third)] == [
        f"{tmp_path}/multirun/{year}", f"{tmp_path}/multirun/{year}_2", f"{tmp_path}/multirun/{year}_3"]
    # the jobs' configs, composed again from these overrides, are in the same dir as the sweep's
    assert third.hydra.overrides.hydra == ["hydra.verbose=false", f"hydra.sweep.dir={tmp_path}/multirun/{year}_3"]
    assert first.hydra.overrides.hydra == ["hydra.verbose=false"]
    assert (tmp_path / "multirun" / year / "mlflow_sweep.json").read_text() == "{}"


def test_a_dir_without_the_time_in_its_name_is_used_as_it_is(tmp_path):
    (tmp_path / "results" / "train").mkdir(parents=True)  # a pipeline stage's, written by each of its runs
    config = hydra_config("run", f"{tmp_path}/results/train")
    assert make_output_dir(config, "run") is None
    assert config.hydra.run.dir == f"{tmp_path}/results/train"
    assert config.hydra.overrides.hydra == ["hydra.verbose=false"]


@pytest.mark.slow
def test_two_runs_of_the_same_second_keep_their_own_checkpoints(cli):
    run_dir = f"hydra.run.dir={cli.tmp_path}/outputs/{SAME_SECOND}"
    cli(run_dir, "seed=1", "trainer.epochs=1")
    second = cli(run_dir, "seed=2", "trainer.epochs=1")
    runs = sorted(all_runs(cli), key=lambda r: r.data.params["seed"])
    dirs = [run.data.tags["hydra.output_dir"] for run in runs]
    assert dirs[1] == f"{dirs[0]}_2"
    assert f"{dirs[0]} was made by another run started in the same second: this one writes to {dirs[1]}" \
        in second.stdout + second.stderr
    for seed, run_dir in zip((1, 2), dirs):
        overrides = OmegaConf.load(f"{run_dir}/.hydra/overrides.yaml")
        assert f"seed={seed}" in overrides
        assert {"best.pt", "last.pt"} <= {p.name for p in Path(run_dir).iterdir()}


@pytest.mark.slow
def test_two_sweeps_of_the_same_second_keep_their_own_jobs_and_parent_runs(cli):
    sweep_dir = f"hydra.sweep.dir={cli.tmp_path}/multirun/{SAME_SECOND}"
    cli(sweep_dir, "optimizer.lr=1e-3,5e-4", "trainer.epochs=1", multirun=True)
    cli(sweep_dir, "optimizer.lr=2e-3", "trainer.epochs=1", multirun=True)
    runs = all_runs(cli)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    first, second = sorted(parents, key=lambda r: r.info.start_time)
    first_dir, second_dir = first.data.tags["cifar.sweep_dir"], second.data.tags["cifar.sweep_dir"]
    assert second_dir == f"{first_dir}_2"
    for parent, sweep_dir, jobs in [(first, first_dir, 2), (second, second_dir, 1)]:
        assert json.loads(Path(sweep_dir, "mlflow_sweep.json").read_text())["parent_run_id"] == parent.info.run_id
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == jobs and parent.info.status == "FINISHED"
        assert {c.data.tags["hydra.output_dir"] for c in children} == {f"{sweep_dir}/{n}" for n in range(jobs)}


# A process that opens a store as a run (MLflow's) or a sweep (Optuna's) does, or loads the data, once every
# process of the test is ready to; it prints the experiment's id, the study storage's tables, or the data's size
WHEN_ALL_READY = """
import logging, sys, time
from pathlib import Path
import mlflow.store.tracking.sqlalchemy_store, optuna.storages, sqlalchemy
from cifar import data, study, tracking
ready, go, what, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
logging.basicConfig(level=logging.INFO)
ready.touch()
while not go.exists():
    time.sleep(0.001)
if what == "mlflow":
    print(tracking.use_experiment(where, "started-at-once"))
elif what == "optuna":
    print(sorted(sqlalchemy.inspect(study.open_storage(where).engine).get_table_names()))
else:
    print(len(data.load_cifar10(where, Path(where).parent / "cache", download=False).train_images))
"""


def start_at_once(tmp_path: Path, what: str, where: str, processes: int = 4) -> list[tuple[str, str]]:
    """The stdout and stderr of ``processes`` processes of :data:`WHEN_ALL_READY`, released at the same instant
    once all of them have imported what they use; each must succeed."""
    go = tmp_path / "go"
    started = [subprocess.Popen([sys.executable, "-c", WHEN_ALL_READY, str(tmp_path / f"ready{n}"), str(go), what,
                                 where], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(processes)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < processes and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    ended = [process.communicate(timeout=120) for process in started]
    assert [process.returncode for process in started] == [0] * processes, [err[-300:] for _, err in ended]
    return ended


@pytest.mark.slow  # four processes import torch and mlflow at once: 11 s a test on 2 cores
@pytest.mark.parametrize("store", ["mlflow", "optuna"])
def test_processes_that_start_at_once_on_a_new_sqlite_store_all_use_it(tmp_path, store):
    ended = start_at_once(tmp_path, store, f"sqlite:///{tmp_path / 'store.db'}")
    assert len({out.strip() for out, _ in ended}) == 1  # the same experiment, or tables, for every process


@pytest.mark.slow  # four processes import torch and mlflow at once: 11 s a test on 2 cores
def test_runs_that_start_at_once_on_new_data_decode_it_once(tmp_path, official_dir):
    source = tmp_path / "data"
    shutil.copytree(official_dir, source)
    ended = start_at_once(tmp_path, "data", str(source))
    assert {out.strip() for out, _ in ended} == {"200"}
    assert sum(err.count("Decoding ") for _, err in ended) == 1  # the others waited, then read its cache


def test_the_lock_of_a_file_being_made_can_be_taken_by_any_user(tmp_path, monkeypatch):
    """Another user's process that makes the same file (a shared data cache) opens the lock file to write."""
    from cifar.files import one_process_at_a_time

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with one_process_at_a_time(tmp_path / "cache.npz"):
        [lock] = (tmp_path / "tmp").iterdir()
        assert stat.S_IMODE(lock.stat().st_mode) == 0o666


@pytest.mark.parametrize("multirun,mode", [(False, "run"), (True, "sweep")])
def test_a_run_or_grid_sweep_in_a_named_dir_that_another_has_just_claimed_is_refused(cli, multirun, mode):
    """Another run or sweep started there a moment before, which has begun no MLflow run yet to be refused by."""
    from cifar.files import claim, release_claim

    output_dir = cli.tmp_path / mode  # the fixture's hydra.run.dir, or hydra.sweep.dir with -m
    assert claim(output_dir)  # by this test's process, as by that run's or sweep's
    try:
        refused = cli("seed=1,2" if multirun else "seed=1", multirun=multirun, check=False)
    finally:
        release_claim(output_dir)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"cifar.train: error: hydra.{mode}.dir={output_dir} is in use by another {mode} started on this machine: give "
        f"this {mode} another hydra.{mode}.dir, or stop that {mode} (Ctrl-C or SIGTERM) first"), refused.stderr
    assert not output_dir.exists() and all_runs(cli) == []


def test_a_claim_on_a_dir_is_let_go_when_its_process_ends_killed_too(tmp_path):
    from cifar.files import claim, release_claim

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from cifar.files import claim; "
         "print(claim(Path(sys.argv[1])), flush=True); time.sleep(300)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert not claim(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert claim(tmp_path)
    release_claim(tmp_path)
