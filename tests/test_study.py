"""Trials left running by a sweeper that died, told apart by their owner and their heartbeat."""

from __future__ import annotations

import logging
import threading

import optuna
import pytest

from cifar import owner, study
from tests.conftest import backdate_heartbeat, running_trial

RUNNING = optuna.trial.TrialState.RUNNING


@pytest.fixture
def storage(tmp_path):
    return study.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_trials_of_a_dead_sweeper_are_failed_killed_and_those_of_live_ones_left_running(tmp_path, storage):
    optuna_study = optuna.create_study(study_name="s", storage=storage)
    elsewhere = "another-host:123:1700000000.00"
    silent = running_trial(optuna_study, storage, elsewhere, heartbeat=True)
    beating = running_trial(optuna_study, storage, elsewhere, heartbeat=True)
    from_before_heartbeats = running_trial(optuna_study, storage, elsewhere, heartbeat=False)
    gone_from_here = running_trial(optuna_study, storage, f"{owner.current().split(':')[0]}:999999999:1.00",
                                   heartbeat=False)
    backdate_heartbeat(tmp_path / "optuna.db", silent, study.SILENT_AFTER_S + 60)
    backdate_heartbeat(tmp_path / "optuna.db", beating, study.SILENT_AFTER_S - 60)

    failed = study.fail_killed_trials(optuna_study, storage, study.left_by_a_dead_sweeper(optuna_study, storage))
    assert sorted(failed) == [silent, gone_from_here]
    trials = optuna_study.get_trials(deepcopy=False)
    assert all(trials[n].state == optuna.trial.TrialState.FAIL and trials[n].user_attrs["killed"] for n in failed)
    assert [t.number for t in trials if t.state == RUNNING] == [beating, from_before_heartbeats]


class FlakyStorage:
    """Records heartbeats, failing on the calls numbered in ``failing``; signals each attempt."""

    def __init__(self, failing: set[int] = frozenset()) -> None:
        self.failing, self.calls, self.recorded = failing, 0, []
        self.attempted = threading.Semaphore(0)

    def record_heartbeat(self, trial_id: int) -> None:
        self.calls += 1
        self.attempted.release()
        if self.calls in self.failing:
            raise ConnectionError("server closed the connection")
        self.recorded.append(trial_id)


class FakeTrial:
    def __init__(self, trial_id: int) -> None:
        self._trial_id = trial_id


def test_the_heartbeat_beats_at_once_for_each_new_batch():
    storage = FlakyStorage()
    heartbeat = study.Heartbeat(storage)
    heartbeat.beat_for([FakeTrial(7), FakeTrial(9)])
    heartbeat.beat_for([FakeTrial(8)])  # the next batch
    assert storage.recorded == [7, 9, 8]


def test_the_heartbeat_beats_every_interval_until_the_sweep_ends_and_outlives_a_storage_error(monkeypatch, caplog):
    monkeypatch.setattr(study, "HEARTBEAT_INTERVAL_S", 0.01)
    storage = FlakyStorage(failing={2})
    heartbeat = study.Heartbeat(storage)
    heartbeat.beat_for([FakeTrial(8)])  # call 1
    with caplog.at_level(logging.WARNING, logger="cifar.study"), heartbeat:
        for _ in range(4):  # calls 2 (failing) to 4, from the thread
            assert storage.attempted.acquire(timeout=10)
    assert not heartbeat.thread.is_alive()
    assert len(storage.recorded) >= 3 and set(storage.recorded) == {8}
    assert "Could not record the trials' heartbeat (ConnectionError: server closed the connection)" in caplog.text
