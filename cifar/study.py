"""The Optuna study of a sweep, as the sweeper, its jobs and other workers reach it: through its storage.

The sweeper tags each trial it asks for with the dir of the job that will run it
(:func:`assign_job`); the job opens the study from the same storage URL and finds its trial by
that tag (:meth:`SweepTrial.of_job`), so it can report and be pruned from whatever process or
machine the launcher runs it on. The study also records its MLflow parent run
(:func:`shared_parent_run`), so that every worker that runs it logs under the same parent.

A sweeper records a heartbeat for the trials it runs (:class:`Heartbeat`, Optuna's trial
heartbeats), so that the other workers of a study can tell a trial whose sweeper died on another
machine (its heartbeat stopped) from one still running there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution

from cifar import owner, tracking
from cifar.config import task_config
from cifar.credentials import without_passwords
from cifar.errors import ConfigError, first_line
from cifar.stores import opened_one_at_a_time, unusable
from cifar.sweeper import SQLITE, checked_directions, is_optuna_sweep, storage_url, study_name

log = logging.getLogger(__name__)

# Parallel jobs write to one SQLite file: wait this long for its lock instead of failing.
SQLITE_BUSY_TIMEOUT_S = 60
# A sweeper records a heartbeat for its running trials this often; a trial whose heartbeat is older
# than SILENT_AFTER_S was left running by a sweeper that died, on whatever machine.
HEARTBEAT_INTERVAL_S = 60
SILENT_AFTER_S = 600
# The sweeper records its trials' heartbeats itself (Heartbeat), outside Study.optimize
warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize", UserWarning)


def sweep_storage(hydra_cfg: DictConfig) -> tuple[optuna.storages.RDBStorage, str]:
    """The storage and study name of an Optuna sweep, from the sweep's Hydra config."""
    storage = open_storage(storage_url(hydra_cfg.sweeper.storage, hydra_cfg.sweep.dir))
    return storage, study_name(hydra_cfg.sweeper.study_name, hydra_cfg.sweep.dir)


def load_sweep_study(hydra_cfg: DictConfig, **kwargs: Any) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The study of an Optuna sweep and its storage, from the sweep's Hydra config."""
    storage, name = sweep_storage(hydra_cfg)
    return optuna.load_study(study_name=name, storage=storage, **kwargs), storage


def trial_settings(job_config: DictConfig, searched: Iterable[str]) -> dict[str, str]:
    """The settings that a sweep's trials share and that change what they measure: a trial's config as MLflow
    params, less the searched parameters (a searched group: all its keys) and what says where or how a trial runs or
    what it records (:func:`cifar.tracking.names_the_training`)."""
    searched = tuple(searched)
    in_searched_group = tuple(f"{key}." for key in searched)
    return {key: value for key, value in tracking.flatten(task_config(job_config)).items()
            if tracking.names_the_training(key) and key not in searched and not key.startswith(in_searched_group)}


def check_study_fits(hydra_cfg: DictConfig, distributions: dict[str, BaseDistribution],
                     settings: dict[str, str]) -> None:
    """Refuse a sweep that the sweep's study, where it exists, cannot take: a search space with another choice of a
    parameter, or another kind or log scale of a range (Optuna keeps them for the study's life, and refuses another at
    the first trial: a traceback, with the trial left RUNNING), or other :func:`trial_settings` than its trials'
    (its sampler and pruner would compare trials trained otherwise)."""
    try:
        existing, _ = load_sweep_study(hydra_cfg)
    except KeyError:  # a new study
        return
    earlier: dict[str, BaseDistribution] = {}  # as Optuna checks it: against the first trial's that has the param
    for trial in existing.get_trials(deepcopy=False):
        for param, distribution in trial.distributions.items():
            earlier.setdefault(param, distribution)
    for param, distribution in distributions.items():
        if param not in earlier:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(earlier[param], distribution)
        except ValueError as err:
            raise ConfigError(
                f"{param}={_described(distribution)} does not fit study {existing.study_name}, whose trials searched "
                f"it as {_described(earlier[param])}: Optuna keeps a parameter's choices (and a range's log scale) for "
                f"a study's life: search it as before, or start another study (hydra.sweeper.study_name=NAME)"
            ) from err
    recorded = existing.user_attrs.get(SETTINGS_ATTR) if counted_trials(existing) else None
    if changed := tracking.changed_settings(recorded or {}, settings):
        shown, more = changed[:SETTINGS_SHOWN], len(changed) - SETTINGS_SHOWN
        raise ConfigError(
            f"{' '.join(f'{key}={settings[key]}' for key in shown)}{f' (and {more} more)' if more > 0 else ''} does "
            f"not fit study {existing.study_name}, whose trials ran with "
            f"{' '.join(f'{key}={recorded[key]}' for key in shown)}: its sampler and pruner compare its trials, which "
            f"must be trained alike but for the searched parameters: run it with its settings, or start another "
            f"study (hydra.sweeper.study_name=NAME)")


def record_trial_settings(hydra_cfg: DictConfig, settings: dict[str, str]) -> None:
    """Record :func:`trial_settings` on the sweep's study, which exists, where none of its trials counts yet (none
    ran, or those that did were stopped or refused): the settings of its first trials hold for its life."""
    study, _ = load_sweep_study(hydra_cfg)
    if SETTINGS_ATTR not in study.user_attrs or not counted_trials(study):
        study.set_user_attr(SETTINGS_ATTR, settings)


def _described(distribution: BaseDistribution) -> str:
    """A search parameter's distribution in the sweeper's override syntax."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    span = f"interval({distribution.low}, {distribution.high})"
    return f"tag(log, {span})" if distribution.log else span


class StudyStorage(optuna.storages.RDBStorage):
    """An RDB storage that prints as its URL without the password (the sweeper logs its storage)."""

    def __str__(self) -> str:
        return without_passwords(self.url)


@functools.cache
def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage that several processes can write at once; one per URL and process.

    For SQLite: write-ahead logging (readers such as optuna-dashboard do not block writers) and
    a busy timeout, so that parallel jobs queue for the lock instead of raising "database is locked".
    """
    from sqlalchemy.exc import SQLAlchemyError

    if reason := unusable(url):
        raise ConfigError(f"hydra.sweeper.storage={url} cannot be used: {reason}")
    engine_kwargs: dict[str, Any] = {}
    try:
        with opened_one_at_a_time(url), warnings.catch_warnings():
            if url.startswith(SQLITE):
                path = Path(url.removeprefix(SQLITE))
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as db:
                    db.execute("PRAGMA journal_mode=WAL")  # a property of the file: kept for later connections
                engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
            with_heartbeats = functools.partial(StudyStorage, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                                                grace_period=SILENT_AFTER_S)
            # Optuna calls trial heartbeats experimental (since 2.9)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return tracking.while_created_elsewhere(with_heartbeats, url, engine_kwargs)
    except (OSError, sqlite3.Error, SQLAlchemyError) as err:
        raise ConfigError(f"hydra.sweeper.storage={url} cannot be used ({type(err).__name__}: "
                          f"{first_line(err)}): give a writable sqlite:///PATH or a reachable database URL") from err


JOB_ATTR = "hydra_job"  # user attribute of a trial: "<sweep dir>/<trial number>", its output dir
OWNER_ATTR = "sweeper"  # user attribute of a trial: the sweeper process that asked for it (cifar.owner)
KILLED_ATTR = "killed"  # user attribute of a trial failed because its sweep was stopped or killed
SURPLUS_ATTR = "surplus"  # user attribute of a trial asked for beyond n_trials by racing workers, never run
REFUSED_ATTR = "refused"  # user attribute of a trial whose config was refused before its job started, never run
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # user attribute of a study: the sweeps' MLflow parent run
PARENT_RUN_WAIT_S = 60  # how long a worker waits for the study's creator to record the parent run
SETTINGS_ATTR = "trial_settings"  # user attribute of a study: its trials' settings (trial_settings)
SETTINGS_SHOWN = 4  # the most settings that a refusal names


def shared_parent_run(hydra_cfg: DictConfig, new_run: Callable[[], str], reuse: Callable[[str], bool]) -> str:
    """The MLflow parent run of the sweep's study, the same for every sweep that runs the study.

    Creating the study decides, atomically in its storage, which worker creates the parent run
    (``new_run()``, its id recorded in the study); the other workers wait for that id and
    ``reuse(id)`` it, as does a later sweep that resumes the study. A study whose recorded run
    cannot be reused here (``reuse`` returns False: another tracking store or experiment), or
    that predates this record, gets a new parent run.
    """
    storage, name = sweep_storage(hydra_cfg)
    try:
        optuna.create_study(study_name=name, storage=storage, directions=checked_directions(hydra_cfg.sweeper))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study_id = storage.get_study_id_from_name(name)
    deadline = time.monotonic() + PARENT_RUN_WAIT_S
    while not created:
        run_id = storage.get_study_user_attrs(study_id).get(PARENT_RUN_ATTR)
        if run_id is not None:
            if reuse(run_id):
                return run_id
            break
        if storage.get_all_trials(study_id, deepcopy=False) or time.monotonic() > deadline:
            break  # a study from before parent runs were recorded, or its creator died
        time.sleep(0.5)
    run_id = new_run()
    storage.set_study_user_attr(study_id, PARENT_RUN_ATTR, run_id)
    return run_id


# Optuna's refusal of the grid sampler's Study.stop, which the sampler asks for once its grid's last point is told
GRID_STOP_REFUSED = "`Study.stop` is supposed to be invoked inside an objective function or a callback."


def tell(study: optuna.Study, trial: optuna.Trial | int, **kwargs: Any) -> None:
    """``Study.tell``, skipping a trial already finished. Where the grid sampler asks to stop the study, as it does
    once its grid's last point is told, Optuna refuses that outside ``Study.optimize`` (the trial is told first): it
    is let pass, as the stock sweeper does for a completed trial (the sweep runs ``n_trials``, at most the grid)."""
    try:
        type(study).tell(study, trial, skip_if_finished=True, **kwargs)
    except RuntimeError as err:
        if GRID_STOP_REFUSED not in str(err):
            raise


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial counts toward ``n_trials``: not killed with its sweep, not surplus, not refused."""
    return not any(trial.user_attrs.get(attr) for attr in (KILLED_ATTR, SURPLUS_ATTR, REFUSED_ATTR))


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward ``n_trials``, running ones (in any worker) included."""
    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The counted trials that are complete, pruned or failed."""
    return [t for t in counted_trials(study) if t.state.is_finished()]


def fail_killed_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, killed: Callable[[optuna.trial.FrozenTrial], bool]
) -> list[int]:
    """Fail, tagged ``killed``, the RUNNING trials that ``killed(trial)`` says their sweeper left; their numbers.

    They do not count toward ``n_trials``: a resumed sweep runs them again with new samples.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if killed(trial):
            storage.set_trial_user_attr(
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), KILLED_ATTR, True
            )
            tell(study, trial.number, state=optuna.trial.TrialState.FAIL)
            numbers.append(trial.number)
    return numbers


def left_by_a_dead_sweeper(study: optuna.Study, storage: optuna.storages.RDBStorage) -> Callable[..., bool]:
    """Whether a RUNNING trial's sweeper is gone: a process of this machine that no longer runs, or
    one on any machine whose heartbeat for the trial stopped ``SILENT_AFTER_S`` ago (trials of
    sweeps from before heartbeats have none, and are judged by their owner only)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    silent = {storage.get_trial_number_from_id(i) for i in storage._get_stale_trial_ids(study_id)}  # reads only
    return lambda trial: trial.number in silent or owner.is_gone(trial.user_attrs.get(OWNER_ATTR, ""))


def owned_by_this_process(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(OWNER_ATTR) == owner.current()


class Heartbeat:
    """Records a heartbeat for this sweeper's running trials now and every ``HEARTBEAT_INTERVAL_S``,
    in a daemon thread, while the sweep runs (a ``with`` block)."""

    def __init__(self, storage: optuna.storages.RDBStorage) -> None:
        self.storage = storage
        self.trial_ids: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat_until_stopped, name="trial-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def beat_for(self, trials: list[optuna.Trial]) -> None:
        """From now on, the heartbeat is for ``trials`` (the batch being run)."""
        self.trial_ids = [trial._trial_id for trial in trials]
        self._beat()

    def _beat(self) -> None:
        for trial_id in self.trial_ids:
            self.storage.record_heartbeat(trial_id)

    def _beat_until_stopped(self) -> None:
        while not self.stopped.wait(HEARTBEAT_INTERVAL_S):
            try:
                self._beat()
            except Exception as err:  # the storage did not answer: the next beat tries again
                log.warning("Could not record the trials' heartbeat (%s: %s): trying again in %d s",
                            type(err).__name__, first_line(err), HEARTBEAT_INTERVAL_S)


def job_dir(sweep_dir: str | Path, trial_number: int) -> str:
    """The dir of the job that runs a trial: named by the trial's number, unique in the study, so
    that workers sharing a sweep dir do not share job dirs."""
    return str(Path(sweep_dir).resolve() / str(trial_number))


def claim(trial: optuna.Trial) -> None:
    """Record this process as the sweeper of a trial that it asked for, first of all: a trial left RUNNING by
    an error before its job is assigned is then this process's to fail, and a dead sweeper's to fail after."""
    trial.set_user_attr(OWNER_ATTR, owner.current())


def assign_job(trial: optuna.Trial, sweep_dir: str | Path) -> None:
    trial.set_user_attr(JOB_ATTR, job_dir(sweep_dir, trial.number))


def fail_unrun(study: optuna.Study, trial: optuna.Trial, why: str) -> None:
    """Fail a trial that no job will run, tagged ``why``: SURPLUS_ATTR (a worker asked for it when the study
    already had ``n_trials``), REFUSED_ATTR (its config was refused) or KILLED_ATTR (the sweep stopped first)."""
    trial.set_user_attr(why, True)
    tell(study, trial, state=optuna.trial.TrialState.FAIL)


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
        key = str(Path(hydra_cfg.runtime.output_dir).resolve())
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get(JOB_ATTR) == key]
        if not mine:
            raise RuntimeError(f"no running trial of study {study.study_name} is assigned to job {key}")
        study_id = storage.get_study_id_from_name(study.study_name)
        return cls(optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, mine[0].number)))

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
    if (best := best_trial(study)) is not None:
        result.update(best_value=best.value, best_params=best.params, best_trial=best.number)
    return result


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """Optuna's best trial of a single-objective study, where Optuna breaks ties; None before a trial completed
    with a value."""
    completed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if t.value is not None and not math.isnan(t.value)]
    return study.best_trial if completed and len(study.directions) == 1 else None
