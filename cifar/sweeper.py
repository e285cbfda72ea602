"""Hydra's sweepers: the Optuna sweeper, with pruning and resumable studies, and the basic (grid) sweeper,
whose jobs' configs are all checked before the first job starts (:func:`check_grid`).

The Optuna sweeper, registered as ``hydra/sweeper=optuna`` in place of the stock plugin, takes the same config
(search-space syntax, samplers, storage, ``n_jobs``, ``max_failure_rate``) plus ``pruner``, a
group with the options median, successive_halving, hyperband, threshold and none. A null
``storage`` means a SQLite file in the sweep dir, since jobs reach their trials through it. It changes
five things and leaves the search to Optuna:

- each trial runs in the job dir ``<sweep dir>/<trial number>`` and is tagged in the study with it,
  so the job finds its trial through the study's storage (:class:`cifar.study.SweepTrial`): it
  reports its validation accuracy after every epoch and stops when the pruner says so, from
  whatever process or machine the launcher runs it on;
- a job that stopped that way has already told the study (PRUNED), so the sweeper's own tell
  skips finished trials;
- ``n_trials`` is the study's total, shared by every sweep that runs the study: rerunning a sweep
  runs only the trials still missing, and several workers on a shared storage (PostgreSQL) run
  the same command and split the trials between them;
- a seeded sampler is reseeded with the seed plus the number of each batch's first trial, so that
  a resumed study or a second worker does not replay the samples of the first;
- the configs of a few trials that take every choice and range end of the search space are checked before the sweep
  starts (:func:`cifar.sweeper_impl.check_search_space`, from the sweep's callback), and each trial's before
  its job starts: a refused trial fails, not counted toward ``n_trials``, and stops the sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.utils import instantiate, to_absolute_path
from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifar.config import validate_job
from cifar.errors import ConfigError, JobConfigError, first_line, unparsed_override
from cifar.launchers import runs_jobs_here
from cifar.parallel import check_threads, warn_shared_threads

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"  # in the sweep dir, when hydra.sweeper.storage is null
SQLITE = "sqlite:///"


@dataclass
class PrunerConfig:
    _target_: str = MISSING


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """Stop a trial whose value is below the median of earlier trials at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    """Stop a trial whose value leaves [lower, upper]."""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: Optional[float] = None
    upper: Optional[float] = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class NopPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.NopPruner"


PRUNERS = {
    "median": MedianPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "threshold": ThresholdPrunerConfig,
    "none": NopPrunerConfig,
}


@dataclass
class PruningOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "cifar.sweeper.PruningOptunaSweeper"
    direction: Any = Direction.maximize  # a trial's value is its validation accuracy (the stock default: minimize)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    pruner: PrunerConfig = MISSING


class PruningOptunaSweeper(OptunaSweeper):
    def __init__(self, pruner: Any, **stock: Any) -> None:
        super().__init__(**stock)  # instantiates the sampler
        from cifar.sweeper_impl import PruningOptunaSweeperImpl  # imports Optuna: only when sweeping

        self.sweeper = PruningOptunaSweeperImpl(pruner, **{**stock, "sampler": self.sweeper.sampler})


@dataclass
class CheckedBasicSweeperConf(BasicSweeperConf):
    _target_: str = "cifar.sweeper.CheckedBasicSweeper"


class CheckedBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper, the default, whose jobs the sweep's callback checks, all of them, before it makes
    the sweep's dir or parent run (:func:`check_grid`). The stock sweeper composes each batch's configs again
    just before launching it, to check that they compose, which the callback's check has covered."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Checked by :func:`check_grid`."""


def is_grid_sweep(hydra_cfg: DictConfig) -> bool:
    return OmegaConf.select(hydra_cfg, "sweeper._target_") == CheckedBasicSweeperConf._target_


def check_grid(config: DictConfig, config_loader: ConfigLoader) -> list[DictConfig]:
    """The configs of a grid sweep's jobs as the basic sweeper will run them, each checked as its task will
    (``cifar.config.validate``), so that a value out of range in the grid's last job stops the sweep before the
    first trains. (:func:`check_data` checks their data.)"""
    from cifar.tracking import override_key, swept_keys  # here: every Hydra process imports this module

    swept = swept_keys(config)
    jobs = grid_jobs(config, config_loader)
    if len(jobs) >= ANNOUNCED_GRID_CHECK:
        log.info("Checking the configs of the sweep's %d jobs before the first starts", len(jobs))
    configs = []
    for overrides in jobs:
        job = " ".join(o for o in overrides if override_key(o) in swept) or " ".join(overrides)
        configs.append(check_job(config_loader, config, overrides, f"the job {job}"))
    return configs


ANNOUNCED_GRID_CHECK = 25  # jobs: their check takes seconds (0.1 to 0.2 s a job), said before it starts


def grid_jobs(config: DictConfig, config_loader: ConfigLoader) -> list[list[str]]:
    """The overrides of each job of a grid sweep, expanded as the basic sweeper will (``hydra.sweeper.params``,
    then the command line's); a sweep that it cannot expand raises ConfigError."""
    parser = OverridesParser.create(config_loader=config_loader)
    overrides = []
    for override in sweeper_arguments(config):
        try:
            overrides += parser.parse_overrides([override])
        except OverrideParseException as err:  # an entry of hydra.sweeper.params: Hydra parsed the command line's
            raise ConfigError(f"hydra.sweeper.params: {unparsed_override(err)}") from err
    for override in overrides:
        if override.is_interval_sweep():
            raise ConfigError(f"{override.input_line}: a grid sweep takes values (a,b,c), choice() or range(), not "
                              f"interval(): list the values, or search the interval with Optuna "
                              f"(hydra/sweeper=optuna, or a preset: hparams_search=optuna)")
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    if not jobs:  # a sweep of no values (range(3,3), a glob() that matches no option): one per key, the last wins
        last = {override.get_key_element(): override for override in overrides}
        empty = next(o for o in last.values() if o.is_sweep_override() and not list(o.sweep_string_iterator()))
        raise ConfigError(f"{empty.input_line} gives no value, so the sweep would run no job: give it one value "
                          "or more")
    return jobs


def sweeper_arguments(config: DictConfig) -> list[str]:
    """What a multirun gives its sweeper to sweep, as overrides in Hydra's order: ``hydra.sweeper.params``, then the
    command line's, which win."""
    params = config.hydra.sweeper.params or {}
    arguments = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # "${...}" as typed, as Hydra's
    return [f"{key}={value}" for key, value in params.items()] + arguments


def check_job(config_loader: ConfigLoader, sweep_config: DictConfig, overrides: Sequence[str], job: str) -> DictConfig:
    """Compose a sweep job's config as its launcher will and check it as its task will; a config that does not
    compose or is refused raises :class:`JobConfigError` naming ``job``. Returns the config."""
    try:
        config = config_loader.load_sweep_config(sweep_config, list(overrides))
        validate_job(config)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        raise JobConfigError(job, err) from err
    return config


def check_machine(configs: Sequence[DictConfig]) -> None:
    """Find the devices that a sweep's jobs name (``trainer.device=cuda``, ``mps``) and the CPU cores for their
    ``trainer.threads`` before the first starts, where they run on this machine: what it has not stops the sweep
    at once, not each of its jobs in turn (jobs that run at once here and take more threads between them than
    its cores are warned of). Raises :class:`cifar.errors.ConfigError`."""
    here = [c for c in configs if runs_jobs_here(c.hydra)]
    for threads in {c.trainer.threads for c in here}:
        check_threads(threads)
    warn_shared_threads(here)
    named = {c.trainer.device for c in here} - {"auto", "cpu"}  # what every machine has
    if named:
        from cifar.device import resolve_device  # imports torch: only for a device that a machine may lack

        for device in sorted(named):
            resolve_device(device)


def check_data(configs: Sequence[DictConfig], training_images: dict[tuple[str, str, bool], int] | None = None,
               decode: bool = True) -> None:
    """Check the data of a sweep's jobs before the first starts, where they run on this machine, and each job's split
    of it (:func:`cifar.data.check_split`): a data.path with no data, or a hold-out or batch that it is too small for,
    stops the sweep at once, not each of its jobs in turn. A source already decoded is sized from its cache's labels
    alone; one that is not is downloaded and decoded, as its first job would, or with ``decode`` false, left for a
    later call. Raises :class:`cifar.errors.DataError` or :class:`cifar.errors.ConfigError`. ``training_images``
    keeps the size of each source read, by source, for later calls."""
    from cifar.data import cached_training_images, check_split, load_cifar10  # numpy: only when sweeping

    training_images = {} if training_images is None else training_images
    for config in (c for c in configs if runs_jobs_here(c.hydra)):
        source = (config.data.path, config.data.cache_dir, config.data.download)
        if source not in training_images:
            path, cache_dir = (Path(to_absolute_path(p)) for p in (config.data.path, config.data.cache_dir))
            size = cached_training_images(path, cache_dir, config.data.download)
            if size is None and decode:
                size = len(load_cifar10(path, cache_dir, config.data.download).train_labels)
            if size is None:
                continue  # not decoded yet
            training_images[source] = size
        check_split(config.data, training_images[source])


def is_optuna_sweep(hydra_cfg: DictConfig) -> bool:
    return OmegaConf.select(hydra_cfg, "sweeper._target_") == PruningOptunaSweeperConf._target_


def checked_directions(sweeper_cfg: DictConfig) -> list[str]:
    """The sweeper's ``direction`` as Optuna's list of directions: ``maximize``, the one the trials' value, their
    validation accuracy, takes (a second one failed every trial with a traceback; ``minimize`` searched for the
    worst). Its other settings that Optuna would reject with a traceback are checked too."""
    for key in ("n_trials", "n_jobs"):
        value = sweeper_cfg[key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value} is out of range: it must be an integer >= 1")
    if not 0 <= (rate := sweeper_cfg.max_failure_rate) <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate} is out of range: it must be in [0, 1], the share "
                          "of a batch's trials that may fail before the sweep stops")
    from cifar.tracking import BEST_VAL_ACC  # here: every Hydra process imports this module

    direction = sweeper_cfg.direction
    names = [str(getattr(d, "name", d)).lower()
             for d in (direction if isinstance(direction, (list, ListConfig)) else [direction])]
    if names != ["maximize"]:
        shown = names[0] if len(names) == 1 else f"[{','.join(names)}]"
        raise ConfigError(f"hydra.sweeper.direction={shown}: a trial's value is one number, its {BEST_VAL_ACC}, which "
                          "the search maximizes: drop hydra.sweeper.direction, or set it to maximize")
    return names


def checked_sweep(config: DictConfig) -> list[str]:
    """:func:`checked_directions` of an Optuna sweep whose trials have a validation accuracy to report
    (and no ``trainer.resume``: the study resumes, and each trial runs in a new job dir), and whose sampler and
    pruner Optuna takes."""
    if config.trainer.resume:
        raise ConfigError("trainer.resume=true: an Optuna sweep resumes its study when the same command runs again, "
                          "without it: drop trainer.resume")
    if config.data.val_size == 0:
        raise ConfigError("data.val_size=0 leaves the trials no validation accuracy to optimise and prune on: "
                          "set data.val_size > 0 for an Optuna sweep")
    directions = checked_directions(config.hydra.sweeper)
    for part, targets in (("sampler", SAMPLER_TARGETS), ("pruner", PRUNER_TARGETS)):
        try:  # as the sweeper will, where a setting that Optuna refuses raised a traceback
            instantiate(config.hydra.sweeper[part], _execution_whitelist_=targets)
        except (ValueError, TypeError, HydraException) as err:
            raise ConfigError(f"hydra.sweeper.{part}: {first_line(err).rstrip('.')}: fix its settings "
                              f"(hydra.sweeper.{part}.*)") from err
    return directions


# What the Optuna sweeper instantiates: the stock sweeper's sampler targets, and the pruners
SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
PRUNER_TARGETS = ("optuna.pruners.*",)


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The configured storage URL, a SQLite path made absolute; with none, a SQLite file in the
    sweep dir (jobs reach their trials through the storage, so there must be one)."""
    if storage is None:
        return f"{SQLITE}{(Path(sweep_dir) / STUDY_FILE).resolve()}"
    if storage.startswith(SQLITE):
        return f"{SQLITE}{Path(storage.removeprefix(SQLITE)).resolve()}"
    return storage


def study_name(name: str | None, sweep_dir: str | Path) -> str:
    """The configured study name; with none, the sweep dir (every process derives the same name)."""
    return name or str(sweep_dir)


def register_sweeper_configs() -> None:
    """Make ``hydra/sweeper=optuna`` this module's Optuna sweeper's config (stock keys plus ``pruner``), and
    ``hydra/sweeper=basic`` its basic sweeper's (the stock keys)."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="basic", node=CheckedBasicSweeperConf, provider="cifar", replace=True)
    store.store(group="hydra/sweeper", name="optuna", node=PruningOptunaSweeperConf, provider="cifar", replace=True)
    for name, node in PRUNERS.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="cifar", replace=True)
