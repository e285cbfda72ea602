"""The sweep loop of :class:`cifar.sweeper.PruningOptunaSweeper`: the stock one, plus resume and pruning."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Sequence

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.errors import HydraException, OverrideParseException
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from cifar import launchers
from cifar import study as studies
from cifar.errors import ConfigError, JobConfigError, UserError, first_line, unparsed_override
from cifar.outages import StoreOutage
from cifar.sweeper import (
    PRUNER_TARGETS, SAMPLER_TARGETS, check_data, check_job, checked_sweep, storage_url, study_name,
    sweeper_arguments,
)

log = logging.getLogger(__name__)


# Optuna's notices of what the sweep says in its own words: that the stock loop's tell of a pruned
# trial was skipped (the job had finished the trial, and its line says it was pruned), and, from
# each of the loop's calls that open the study, that it exists (the sweep says how many trials it holds)
SAID_BY_THE_SWEEP = {"optuna.study._tell": "Skipped telling trial", "optuna.study.study": "Using an existing study"}


def _drop_notice(notice: str) -> Callable[[logging.LogRecord], bool]:
    """A logging filter that drops the records whose message starts with ``notice``."""
    return lambda record: not record.getMessage().startswith(notice)


for logger_name, notice in SAID_BY_THE_SWEEP.items():
    logging.getLogger(logger_name).addFilter(_drop_notice(notice))


def none_completed(study: optuna.Study) -> bool:
    """Whether trials of ``study`` finished and none of them completed (all pruned or failed)."""
    return bool(studies.finished_trials(study)) and not study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def how_many(n: int, what: str = "trial") -> str:
    """``n`` and the noun, singular for one: "1 trial", "2 trials"."""
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


class StudyFull(Exception):
    """The study has its ``n_trials`` (other workers run the rest): this worker's sweep is done."""


class PruningOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, pruner: Any, **stock: Any) -> None:
        super().__init__(**stock)
        self.pruner_cfg = pruner
        self.batch_started = False  # a trial was asked for in the current batch
        self.training_images: dict[tuple[str, str, bool], int] = {}  # by data source, for the trials' splits

    def sweep(self, arguments: list[str]) -> None:
        directions = checked_sweep(self.config)
        self.storage = studies.open_storage(storage_url(self.storage, self.sweep_dir))
        self.heartbeat = studies.Heartbeat(self.storage)
        self.study_name = study_name(self.study_name, self.sweep_dir)
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, directions=directions, load_if_exists=True
        )
        self._fail_left_trials(study)
        self.study_trials = self.n_trials
        counted = studies.counted_trials(study)
        taken = len(counted)
        if taken:
            done = sum(t.state.is_finished() for t in counted)
            running = f" and {taken - done} running in other workers" if taken > done else ""
            self.n_trials = max(0, self.n_trials - taken)
            log.info("Study %s has %s%s: running %d more", study.study_name, how_many(done, "finished trial"),
                     running, self.n_trials)
        try:
            with self.heartbeat:
                super().sweep(arguments)
        except StudyFull:
            log.info("Study %s has its %s, the last ones run by other workers: this sweep is done",
                     study.study_name, how_many(self.study_trials))
        except BaseException as err:
            if isinstance(err, ValueError) and none_completed(study):
                # The stock loop ends by asking for the best trial, which fails when trials ran but none completed
                log.warning("No trial of study %s completed (all pruned or failed): no best parameters",
                            self.study_name)
                return
            # No job will finish the trials that this process runs: failed, they count no more toward n_trials
            stopped = studies.fail_killed_trials(study, self.storage, studies.owned_by_this_process)
            if isinstance(err, (KeyboardInterrupt, StoreOutage)) or launchers.lost_job(err):
                # stopped: by a signal, the MLflow store's outage, or the loss of a job's process
                log.warning("Sweep stopped: trials %s of study %s marked failed (killed); run the same command "
                            "to finish the study", stopped, study.study_name)
            raise  # else an error, as of a job dir that the launcher cannot make: said in the command's line

    def _configure_trials(self, trials: list[optuna.Trial], *args: Any) -> list[tuple[str, ...]]:
        for trial in trials:
            studies.claim(trial)
        study = trials[0].study
        # A pruned job finishes its trial itself; the stock loop then tells it again: skip that (and the grid
        # sampler's stop, which the stock loop lets pass only for a completed trial).
        study.tell = functools.partial(studies.tell, study)
        study.ask = functools.partial(self._ask_unless_full, study)  # for the next batches
        self.batch_started = False
        trials = self._within_n_trials(study, trials)
        # the sampler groups trials by the pruner (hyperband)
        study.pruner = instantiate(self.pruner_cfg, _execution_whitelist_=PRUNER_TARGETS)
        study.sampler = self._reseeded_sampler(trials[0].number)
        overrides = super()._configure_trials(trials, *args)
        self._check_configs(study, trials, overrides)
        for trial in trials:
            studies.assign_job(trial, self.sweep_dir)
        self.heartbeat.beat_for(trials)
        # The job dir is named by the trial's number (the stock one: by the job's number in this sweep).
        return [(*job, f"hydra.sweep.subdir={trial.number}") for job, trial in zip(overrides, trials)]

    def _check_configs(self, study: optuna.Study, trials: list[optuna.Trial], jobs: Sequence[Sequence[str]]) -> None:
        """Check each trial's config and its split of the data before its job starts; where one is refused, the
        batch's trials fail, not counted toward ``n_trials`` (none ran), and the sweep stops naming it."""
        for trial, job in zip(trials, jobs):
            name = f"trial {trial.number} ({assignments(trial.params)})"
            try:
                config = check_job(self.hydra_context.config_loader, self.config, job, name)
                check_data([config], self.training_images)
            except UserError as err:  # the config (JobConfigError, naming the trial), or its split of the data
                for unrun in trials:
                    studies.fail_unrun(study, unrun, studies.REFUSED_ATTR if unrun is trial else studies.KILLED_ATTR)
                if isinstance(err, JobConfigError):
                    raise
                raise JobConfigError(name, err) from err

    def _ask_unless_full(self, study: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        """``study.ask()``; at a batch's start, first a check that other workers left trials to run
        (those left running by a dead worker are failed first: they would never finish)."""
        if not self.batch_started:
            self._fail_left_trials(study)
            if len(studies.counted_trials(study)) >= self.study_trials:
                raise StudyFull
        self.batch_started = True
        return type(study).ask(study, *args, **kwargs)

    def _fail_left_trials(self, study: optuna.Study) -> None:
        """Fail (killed) the trials left running by a sweeper that died: they run again."""
        left = studies.fail_killed_trials(study, self.storage, studies.left_by_a_dead_sweeper(study, self.storage))
        if left:
            log.warning("Trials %s of study %s were left running by a sweep that died (killed, or silent for %d s): "
                        "marked failed (killed), to be run again", left, study.study_name, studies.SILENT_AFTER_S)

    def _within_n_trials(self, study: optuna.Study, trials: list[optuna.Trial]) -> list[optuna.Trial]:
        """The trials asked for within the study's ``n_trials``; the others, asked by workers racing
        for the last trials, are failed as surplus and not run (the stock loop tells only those run)."""
        counted = sorted(t.number for t in studies.counted_trials(study))
        within = [t for t in trials if counted.index(t.number) < self.study_trials]
        for trial in trials[len(within):]:  # the batch's last ones: the stock loop pairs the rest with their jobs
            studies.fail_unrun(study, trial, studies.SURPLUS_ATTR)
        if not within:
            raise StudyFull
        return within

    def _reseeded_sampler(self, offset: int) -> Any:
        """A seeded sampler, its seed offset by ``offset``: a resumed study or a second worker would
        otherwise replay the first trials' samples."""
        sampler_cfg = self.config.hydra.sweeper.sampler
        if sampler_cfg.get("seed") is None or sampler_cfg.get("_partial_"):
            return self.sampler  # unseeded, or the grid sampler (which skips grid points already used)
        return instantiate(
            sampler_cfg,
            seed=sampler_cfg.seed + offset,
            _execution_whitelist_=SAMPLER_TARGETS,
        )


# A search space as the stock sweeper parses it: the searched parameters' distributions, the fixed parameters'
# values, and the overrides passed on as they are (deletions)
SearchSpace = tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]
GRID_SAMPLER = "optuna.samplers.GridSampler"


def check_search_space(config: DictConfig,
                       config_loader: ConfigLoader) -> tuple[dict[str, BaseDistribution], list[DictConfig]]:
    """Check the search space before the sweep starts: that its sampler can draw it, and the configs of a few
    trials it holds (:func:`probe_trials`), so that a choice or range end that every trial holding it would be
    refused for stops the sweep at once; a search of nothing is refused (every trial would train the same config).
    Returns its distributions and those configs. (:func:`cifar.sweeper.check_data` checks their data.)"""
    space = search_space(sweeper_arguments(config))
    if not space[0]:
        raise ConfigError(f"the Optuna sweep searches no parameter, so its {config.hydra.sweeper.n_trials} trials "
                          "would train the same config: give it one to search, as optimizer.lr='tag(log, "
                          "interval(1e-4, 1e-1))' (or a preset: hparams_search=optuna), or drop -m to train it once")
    if OmegaConf.select(config, "hydra.sweeper.sampler._target_") == GRID_SAMPLER:
        _check_grid(space[0])
    configs = [check_job(config_loader, config, overrides, f"the search space's trial {assignments(searched)}")
               for searched, overrides in probe_trials(*space)]
    return space[0], configs


def search_space(arguments: list[str]) -> SearchSpace:
    """What the stock sweeper searches among its :func:`cifar.sweeper.sweeper_arguments` (a later one wins), the
    parameters it fixes and the overrides it passes on; a range that Optuna cannot take raises ConfigError."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    passed: list[str] = []
    for override in arguments:
        try:
            searched, fixed_one, passed_one = create_params_from_overrides([override])
        except OverrideParseException as err:  # an entry of hydra.sweeper.params: Hydra parsed the command line's
            raise ConfigError(f"hydra.sweeper.params: {unparsed_override(err)}") from err
        except (ValueError, AssertionError, HydraException) as err:
            raise ConfigError(f"{override}: {first_line(err).rstrip('.')}: fix the search range") from err
        distributions.update(searched)
        fixed.update(fixed_one)
        passed += passed_one
    return {name: d for name, d in distributions.items() if name not in fixed}, fixed, passed


def _check_grid(distributions: dict[str, BaseDistribution]) -> None:
    """The grid sampler draws choices and ranges with a step only (the stock sweeper fails with a traceback)."""
    continuous = [name for name, d in distributions.items() if isinstance(d, FloatDistribution) and d.step is None]
    if continuous:
        raise ConfigError(f"hydra/sweeper/sampler=grid takes choices and ranges with a step, not the intervals of "
                          f"{', '.join(continuous)}: give each as choice(...) or range(start, stop, step), "
                          f"or choose another sampler")


def probe_trials(distributions: dict[str, BaseDistribution], fixed: dict[str, Any],
                 passed: list[str]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Trials of a :func:`search_space`, as the stock sweeper writes their jobs' overrides, which between them take
    every choice of each parameter and both ends of each range (each beside the other parameters' values in
    turn); with each, its searched values."""
    values = {name: _probe_values(d) for name, d in distributions.items()}
    probes = []
    for i in range(max(map(len, values.values()), default=0)):
        searched = {name: choices[i % len(choices)] for name, choices in values.items()}
        probes.append((searched, (*(f"{k}={v}" for k, v in {**searched, **fixed}.items()), *passed)))
    return probes


PROBE_INSET = 1e-3  # a float range is probed this share of its width inside each end, where its samplers draw


def _probe_values(distribution: BaseDistribution) -> list[Any]:
    """A search parameter's choices, or the ends of its range (a float range's just inside them)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high
    if not isinstance(distribution, FloatDistribution) or distribution.step is not None:
        return [low, high]  # a grid's ends, which its samplers draw
    return [_inset(distribution, low, high), _inset(distribution, high, low)]


def _inset(distribution: FloatDistribution, end: float, other: float) -> float:
    """The value PROBE_INSET of the range's width (on a log range, its log's) in from ``end`` toward ``other``,
    to 4 significant digits where that stays inside the range."""
    scale, unscale = (math.log, math.exp) if distribution.log else (float, float)
    value = unscale(scale(end) + PROBE_INSET * (scale(other) - scale(end)))
    rounded = float(f"{value:.4g}")
    return rounded if distribution.low < rounded < distribution.high else value


def assignments(params: dict[str, Any]) -> str:
    """Parameters as overrides: "optimizer=adam optimizer.lr=0.001"."""
    return " ".join(f"{key}={value}" for key, value in params.items())
