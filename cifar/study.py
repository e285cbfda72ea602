"""The Optuna study of a sweep, as both the sweeper and its jobs reach it: through its storage.

The sweeper tags each trial it asks for with the sweep dir and number of the job that will run
it (:func:`assign_job`); the job opens the study from the same storage URL and finds its trial by
those tags (:meth:`SweepTrial.of_job`), so it can report and be pruned from whatever process or
machine the launcher runs it on.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from cifar import owner
from cifar.sweeper import SQLITE, is_optuna_sweep, storage_url, study_name

# Parallel jobs write to one SQLite file: wait this long for its lock instead of failing.
SQLITE_BUSY_TIMEOUT_S = 60


def load_sweep_study(hydra_cfg: DictConfig, **kwargs: Any) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The study of an Optuna sweep and its storage, from the sweep's Hydra config."""
    storage = open_storage(storage_url(hydra_cfg.sweeper.storage, hydra_cfg.sweep.dir))
    name = study_name(hydra_cfg.sweeper.study_name, hydra_cfg.sweep.dir)
    return optuna.load_study(study_name=name, storage=storage, **kwargs), storage


@functools.cache
def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage that several processes can write at once; one per URL and process.

    For SQLite: write-ahead logging (readers such as optuna-dashboard do not block writers) and
    a busy timeout, so that parallel jobs queue for the lock instead of raising "database is locked".
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith(SQLITE):
        path = Path(url.removeprefix(SQLITE))
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as db:
            db.execute("PRAGMA journal_mode=WAL")  # a property of the file: kept for later connections
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


JOB_ATTR = "hydra_job"  # user attribute of a trial: "<sweep dir>/<job number>", its output dir
OWNER_ATTR = "sweeper"  # user attribute of a trial: the sweeper process that asked for it (cifar.owner)
KILLED_ATTR = "killed"  # user attribute of a trial failed because its sweep was stopped or killed


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward ``n_trials``: complete, pruned or failed, but not killed."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(KILLED_ATTR)]


def fail_killed_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, killed: Callable[[str], bool]
) -> list[int]:
    """Fail, tagged ``killed``, the RUNNING trials whose sweeper ``killed(owner)`` says is stopped; their numbers.

    They do not count toward ``n_trials``: a resumed sweep runs them again with new samples.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if killed(trial.user_attrs.get(OWNER_ATTR, "")):
            storage.set_trial_user_attr(
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), KILLED_ATTR, True
            )
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            numbers.append(trial.number)
    return numbers


def job_key(sweep_dir: str | Path, job_num: int) -> str:
    return f"{Path(sweep_dir).resolve()}/{job_num}"


def assign_job(trial: optuna.Trial, sweep_dir: str | Path, job_num: int) -> None:
    trial.set_user_attr(JOB_ATTR, job_key(sweep_dir, job_num))
    trial.set_user_attr(OWNER_ATTR, owner.current())


@dataclass
class SweepTrial:
    """The Optuna trial that this job runs as: reports each epoch's value and asks the pruner."""

    trial: optuna.Trial

    @classmethod
    def of_job(cls, hydra_cfg: DictConfig) -> SweepTrial | None:
        """The job's trial, or None when the job is not part of an Optuna sweep."""
        if hydra_cfg.mode != RunMode.MULTIRUN or not is_optuna_sweep(hydra_cfg):
            return None
        study, storage = load_sweep_study(hydra_cfg, pruner=instantiate(hydra_cfg.sweeper.pruner))
        key = job_key(hydra_cfg.sweep.dir, hydra_cfg.job.num)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get(JOB_ATTR) == key]
        if not mine:
            raise RuntimeError(f"no running trial of study {study.study_name} is assigned to job {key}")
        number = max(t.number for t in mine)  # a stale trial of a killed sweep in the same dir is older
        study_id = storage.get_study_id_from_name(study.study_name)
        return cls(optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number)))

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def study_name(self) -> str:
        return self.trial.study.study_name

    def should_prune(self, epoch: int, value: float) -> bool:
        """Record ``value`` as the trial's intermediate value at ``epoch``; True if the pruner stops it."""
        self.trial.report(value, step=epoch)
        return self.trial.should_prune()

    def prune(self) -> None:
        """Finish the trial as PRUNED (its value: the last reported one); the sweeper skips its own tell."""
        self.trial.study.tell(self.number, state=optuna.trial.TrialState.PRUNED)


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts by state and, once a trial completed, the best value, parameters and trial number."""
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    result: dict[str, Any] = {"trials": {k: v for k, v in counts.items() if v}}
    completed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if t.value is not None and not math.isnan(t.value)]
    if completed and len(study.directions) == 1:
        best = study.best_trial
        result.update(best_value=best.value, best_params=best.params, best_trial=best.number)
    return result
