"""The line that says how to continue an interrupted run or sweep (the whole flow: tests/test_resume.py)."""

from __future__ import annotations

import pytest

from cifar.continuation import ContinuationCallback, Started, how_to_continue


@pytest.fixture
def started(monkeypatch):
    def start(kind: str, output_dir: str) -> None:
        monkeypatch.setattr(ContinuationCallback, "started", Started(kind, output_dir))

    monkeypatch.setattr(ContinuationCallback, "started", None)
    return start


def test_a_run_is_continued_in_its_own_dir_and_the_args_it_replaces_are_dropped(started, tmp_path):
    started("run", str(tmp_path))
    assert how_to_continue(["trainer.epochs=30"]) == "no epoch had finished, so there is no checkpoint to continue from"
    (tmp_path / "last.pt").write_bytes(b"")
    args = ["trainer.epochs=30", "trainer.resume=false", "hydra.run.dir=old", "model.name=a b"]
    assert how_to_continue(args) == (
        "the last epoch's checkpoint (last.pt) is kept; continue with: python -m cifar.train trainer.epochs=30 "
        f"'model.name=a b' trainer.resume=true hydra.run.dir={tmp_path}")


def test_a_sweep_is_continued_in_its_sweep_dir_and_a_study_by_the_same_command(started):
    assert how_to_continue(["-m", "seed=0,1"]) == "nothing had started"
    started("sweep", "multirun/2026-12-02/10-00-00")
    assert how_to_continue(["-m", "seed=0,1"]) == (
        "finished jobs are kept; continue with: python -m cifar.train -m seed=0,1 trainer.resume=true "
        "hydra.sweep.dir=multirun/2026-12-02/10-00-00")
    started("study", "multirun/2026-12-02/10-00-00")
    assert how_to_continue(["-m", "hparams_search=optuna", "optimizer.lr=tag(log, interval(1e-4, 1e-1))"]) == (
        "finished trials are kept; the same command finishes the study: python -m cifar.train -m "
        "hparams_search=optuna 'optimizer.lr=tag(log, interval(1e-4, 1e-1))'")

