"""The sweep loop of :class:`cifar.sweeper.PruningOptunaSweeper`: the stock one, plus resume and pruning."""

from __future__ import annotations

import functools
import logging
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

from cifar import owner
from cifar import study as studies
from cifar.errors import ConfigError
from cifar.sweeper import storage_url, study_name

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


class PruningOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, pruner: Any, **stock: Any) -> None:
        super().__init__(**stock)
        self.pruner_cfg = pruner

    def sweep(self, arguments: list[str]) -> None:
        directions = self._get_directions()
        self._check(directions)
        self.storage = studies.open_storage(storage_url(self.storage, self.sweep_dir))
        self.study_name = study_name(self.study_name, self.sweep_dir)
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, directions=directions, load_if_exists=True
        )
        stale = studies.fail_killed_trials(study, self.storage, owner.is_gone)
        if stale:
            log.warning("Trials %s of study %s were left running by a killed sweep: marked failed (killed), "
                        "to be run again", stale, study.study_name)
        done = len(studies.finished_trials(study))
        if done:
            self.n_trials = max(0, self.n_trials - done)
            self.sampler = self._reseeded_sampler(done)
            log.info("Study %s has %d finished trials: running %d more", study.study_name, done, self.n_trials)
        try:
            super().sweep(arguments)
        except KeyboardInterrupt:
            stopped = studies.fail_killed_trials(study, self.storage, lambda who: who == owner.current())
            log.warning("Sweep stopped: trials %s of study %s marked failed (killed); run the same command "
                        "to finish the study", stopped, study.study_name)
            raise
        except ValueError:
            # The stock loop ends by asking for the best trial, which fails when trials ran but
            # none completed; any other error goes on.
            if not studies.finished_trials(study) or study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
            ):
                raise
            log.warning("No trial of study %s completed (all pruned or failed): no best parameters", self.study_name)

    def _check(self, directions: list[str]) -> None:
        """The sweeper settings that Optuna would otherwise reject with a traceback."""
        for direction in directions:
            if str(direction).lower() not in DIRECTIONS:
                raise ConfigError(f"hydra.sweeper.direction={direction} is not a direction: use one of {DIRECTIONS}")
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value} is out of range: it must be an integer >= 1")

    def _configure_trials(self, trials: list[optuna.Trial], *args: Any) -> list[tuple[str, ...]]:
        study = trials[0].study
        # A pruned job finishes its trial itself; the stock loop then tells it again: skip that.
        study.tell = functools.partial(type(study).tell, study, skip_if_finished=True)
        study.pruner = instantiate(self.pruner_cfg)  # the sampler groups trials by it (hyperband)
        overrides = super()._configure_trials(trials, *args)
        for job_num, trial in enumerate(trials, start=self.job_idx):  # numbered as the launcher will
            studies.assign_job(trial, self.sweep_dir, job_num)
        return overrides

    def _reseeded_sampler(self, offset: int) -> Any:
        """A seeded sampler would replay the first trials' samples on a resumed study: offset its seed."""
        sampler_cfg = self.config.hydra.sweeper.sampler
        if sampler_cfg.get("seed") is None or sampler_cfg.get("_partial_"):
            return self.sampler  # unseeded, or the grid sampler (which skips grid points already used)
        return instantiate(
            sampler_cfg,
            seed=sampler_cfg.seed + offset,
            _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"),
        )
