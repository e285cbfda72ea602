"""Structured config schemas: the types and keys every composed config must match.

Values live in the YAML files under ``conf/``; these dataclasses only say what keys exist
and what type each has, so a typo or a wrong type fails while Hydra composes the config.
Ranges that a type cannot express are checked by :func:`validate` before any work starts.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from cifar import dvc_exp, tracking
from cifar.errors import AbortRun, ConfigError, DataError
from cifar.files import LAST, release_claim
from cifar.output_dirs import claim_named_dir, is_time_named
from cifar.tracking import NOTE_TAG, is_own_tag


@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class SimpleCNNConfig(ModelConfig):
    channels: list[int] = MISSING
    hidden: int = MISSING
    dropout: float = MISSING
    batch_norm: bool = MISSING


@dataclass
class ResNet18Config(ModelConfig):
    pass


@dataclass
class ResNet9Config(ModelConfig):
    channels: list[int] = MISSING


@dataclass
class AirbenchConfig(ModelConfig):
    widths: list[int] = MISSING


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    norm_bias_lr_scale: float = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class MuonConfig(SGDConfig):
    muon_lr: float = MISSING
    muon_momentum: float = MISSING
    ns_steps: int = MISSING
    normalize_filters: bool = MISSING


@dataclass
class SchedulerConfig:
    name: str = MISSING


@dataclass
class CosineConfig(SchedulerConfig):
    warmup_epochs: float = MISSING
    min_lr_ratio: float = MISSING


@dataclass
class OneCycleConfig(SchedulerConfig):
    pct_start: float = MISSING
    div_factor: float = MISSING
    final_div_factor: float = MISSING
    anneal: str = MISSING
    cycle_momentum: bool = MISSING
    base_momentum: float = MISSING
    max_momentum: float = MISSING


@dataclass
class AugmentConfig:
    crop_padding: int = MISSING
    pad_mode: str = MISSING
    flip: bool = MISSING
    alternate_flip: bool = MISSING
    cutout: int = MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    path: str = MISSING
    download: bool = MISSING
    cache_dir: str = MISSING
    batch_size: int = MISSING
    eval_batch_size: Optional[int] = MISSING
    val_size: int = MISSING
    limit: Optional[int] = MISSING
    test_limit: Optional[int] = MISSING
    augment: AugmentConfig = MISSING


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    device: str = MISSING
    amp: Optional[bool] = MISSING
    channels_last: Optional[bool] = MISSING
    compile: Optional[bool] = MISSING
    patience: Optional[int] = MISSING
    label_smoothing: float = MISSING
    grad_clip_norm: Optional[float] = MISSING
    tta_flip: bool = MISSING
    tta_translate: bool = MISSING
    tta_in_validation: bool = MISSING
    ema_decay: Optional[float] = MISSING
    lookahead_every: Optional[int] = MISSING
    lookahead_decay: float = MISSING
    whiten: bool = MISSING
    whiten_bias_epochs: Optional[int] = MISSING
    resume: bool = MISSING
    checkpoint_every: int = MISSING
    threads: Optional[int] = MISSING
    progress: Optional[bool] = MISSING


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = MISSING
    experiment: str = MISSING
    log_plots: bool = MISSING
    log_model: bool = MISSING
    register_model: bool = MISSING
    model_name: str = MISSING
    store_wait_s: float = MISSING
    run_name: Optional[str] = MISSING
    description: Optional[str] = MISSING
    tags: dict[str, str] = MISSING


@dataclass
class DiagnosticsConfig:
    epochs: list[int] = MISSING
    gradient_flow: bool = MISSING
    weights: bool = MISSING
    predictions: bool = MISSING
    per_class: bool = MISSING
    samples: int = MISSING


@dataclass
class Config:
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    mlflow: MlflowConfig = MISSING
    diagnostics: DiagnosticsConfig = MISSING
    seed: int = MISSING


GROUP_SCHEMAS = {
    "model": {"simplecnn": SimpleCNNConfig, "resnet18": ResNet18Config, "resnet9": ResNet9Config,
              "airbench": AirbenchConfig},
    "optimizer": {"adam": AdamConfig, "adamw": AdamConfig, "sgd": SGDConfig, "muon": MuonConfig},
    "scheduler": {"none": SchedulerConfig, "cosine": CosineConfig, "onecycle": OneCycleConfig},
    "data": {"cifar10": DataConfig},
    "diagnostics": {"diagnostics": DiagnosticsConfig},
}


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def key_paths(schema: type = Config, prefix: str = "") -> set[str]:
    """Every key of the config, dotted, as the schemas give them (a group's keys: those of all its options)."""
    hints = typing.get_type_hints(schema)
    paths = set()
    for field in dataclasses.fields(schema):
        path, kind = f"{prefix}{field.name}", hints[field.name]
        nested = (GROUP_SCHEMAS[path].values() if path in GROUP_SCHEMAS
                  else [kind] if dataclasses.is_dataclass(kind) else [])
        paths |= set().union(*(key_paths(option, f"{path}.") for option in nested)) if nested else {path}
    return paths


def keys_named(name: str) -> list[str]:
    """The config's keys (:func:`key_paths`) whose last part is ``name``'s (``lr``, ``data.epochs``): where a key
    given by its name alone, as a params.yaml with every setting at its top has it, is."""
    last = name.rpartition(".")[2]
    return sorted(path for path in key_paths() if path.rpartition(".")[2] == last)


def key_elsewhere(unknown: str) -> str:
    """``did you mean optimizer.lr? `` for an unknown key (``lr``, ``data.epochs``) whose name is a key's elsewhere
    in the config (:func:`keys_named`); else ``""``."""
    elsewhere = [path for path in keys_named(unknown) if path != unknown]
    return f"did you mean {' or '.join(elsewhere)}? " if elsewhere else ""


def config_groups() -> str:
    """``group: option, option`` lines for the config groups under ``conf/`` (used by ``--help``)."""
    lines = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        if options:
            lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines)


def register_configs() -> None:
    """Register the schemas under ``schema/<group>/<option>``; each ``conf/`` option extends one."""
    OmegaConf.register_resolver("cifar_config_groups", config_groups, replace=True)
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config, replace=True)
    for group, options in GROUP_SCHEMAS.items():
        for option, schema in options.items():
            store.store(group=f"schema/{group}", name=option, node=schema, replace=True)


def compose(overrides: list[str]) -> DictConfig:
    """The validated config that ``python -m cifar.train OVERRIDES`` runs with (for the tools beside it)."""
    return compose_with_hydra(overrides)[0]


def compose_with_hydra(overrides: list[str]) -> tuple[DictConfig, DictConfig]:
    """:func:`compose`'s config, and Hydra's own (``hydra.*``: the sweeper's settings, say)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import cifar.hydra_plugin  # noqa: F401  registers the schemas, as Hydra does for the CLI

    with initialize_config_dir(str(CONF_DIR)):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        hydra_cfg = cfg.pop("hydra")
    validate(cfg)
    return cfg, hydra_cfg


class RunConfigCheck(Callback):
    """Checks a single run's config before Hydra makes the run's output dir (``hydra.callbacks.config_check``,
    first), so that a bad value leaves no dir of a run that never started, and that a run still running in that dir
    keeps its files. A grid's jobs are checked before the
    sweep starts (``cifar.sweeper.check_grid``), an Optuna search's by its sweeper as each starts
    (``cifar.sweeper_impl``), after a check of its search space. It holds the claim on a dir named on the command
    line for the run (:func:`cifar.output_dirs.claim_named_dir`)."""

    claimed: Path | None = None  # hydra.run.dir, where it is named on the command line

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cifar.data import cached_training_images, check_split  # numpy: once a run starts
        from cifar.parallel import check_threads

        try:
            check_working_dir(config.hydra)
            search = config.hydra.runtime.choices.get("hparams_search")
            if search:  # it would train one run with the defaults
                raise ConfigError(f"hparams_search={search} is a search, which runs only as a sweep: add -m "
                                  f"(python -m cifar.train -m hparams_search={search} ...)")
            if config.trainer.resume:
                _check_resumable(config.hydra.run)
            validate_job(config)
            check_threads(config.trainer.threads)
            # data.path refused where it holds no data; the split, where the data was decoded (else the run checks it
            # once it has decoded it)
            if (training_images := cached_training_images(Path(config.data.path), Path(config.data.cache_dir),
                                                          config.data.download)) is not None:
                check_split(config.data, training_images)
            if not config.trainer.resume:
                _check_no_run_in(config)
            self.claimed = claim_named_dir(config, "run")
        except (ConfigError, DataError) as err:
            raise AbortRun(err) from err  # past Hydra, which only warns of a callback's Exception

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.claimed is not None:
            release_claim(self.claimed)


def check_working_dir(hydra_cfg: DictConfig) -> None:
    """Refuse ``hydra.job.chdir=true``: a job that ran in its output dir logged to an MLflow store of its own there
    (MLflow's default, ``mlflow.db`` in the working directory), and a sweep's jobs did not find their parent run
    (``mlflow_sweep.json`` in the sweep dir, a relative path)."""
    if hydra_cfg.job.chdir:
        raise ConfigError("hydra.job.chdir=true is not supported: runs find data.path, the MLflow store and their "
                          "sweep's files from the directory they start in, and write their checkpoints and logs to "
                          "their output dir all the same: drop hydra.job.chdir")


def _check_no_run_in(config: DictConfig) -> None:
    """Refuse a run in ``hydra.run.dir`` (a dir named on the command line, run again) while another process still
    runs a run there: each would write over the other's checkpoints, and Hydra this one's config over that one's
    ``.hydra/`` files first. A time-named dir is new (:mod:`cifar.output_dirs`); a DVC stage's runs one at a time."""
    run_dir = Path(config.hydra.run.dir)
    if is_time_named(config.hydra.run) or dvc_exp.runs_a_stage() or not run_dir.is_dir():
        return
    if (running := tracking.run_still_running_in(config.mlflow, run_dir)) is not None:
        raise tracking.dir_in_use("hydra.run.dir", run_dir, "run", running, "MLflow run")


def _check_resumable(run: DictConfig) -> None:
    """That ``hydra.run.dir`` holds the interrupted run's ``last.pt``, before the data is loaded (seconds)."""
    if is_time_named(run):  # a new dir
        raise ConfigError("trainer.resume=true continues the run in hydra.run.dir, here a new dir named by the time: "
                          "set hydra.run.dir to the interrupted run's output dir (the line printed on the interrupt "
                          "gives the command), or drop trainer.resume")
    from cifar import checkpoint  # torch: which a resumed run imports next

    if not (last := Path(run.dir) / LAST).exists():
        raise checkpoint.nothing_to_resume(last)


def validate_job(config: DictConfig) -> None:
    """:func:`validate` a config that Hydra composed for a run or a job, ``hydra`` node and all."""
    validate(task_config(config))


def task_config(config: DictConfig) -> DictConfig:
    """A copy of a config that Hydra composed for a run or a job, without its ``hydra`` node (where it has one): what
    the task gets."""
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


# The fixes that config errors name, here and in cifar.train for OmegaConf's own errors
LISTS_THE_KEYS = "`--cfg job` lists the keys"
FIX_THE_VALUE = "Fix the override or the config file."

# A path's ~ is expanded by the shell only: here it would be a folder named ~ in the working directory
NO_TILDE = ("must not start with ~, which nothing expands here: give the full path, or $HOME/... on the command line "
            "(the shell expands it), ${oc.env:HOME}/... in a config file")
DEVICES = ("auto", "cpu", "cuda", "mps")
PAD_MODES = ("reflect", "zeros")
ANNEALS = ("cos", "linear")
IMAGE_SIZE = 32  # CIFAR-10 images are 32x32


def validate(cfg: Any) -> None:
    """Check the keys and ranges that types cannot express; raise ConfigError naming the key and the fix."""
    for key in _unknown_keys(cfg):
        raise ConfigError(f"{key} is not a config key (added with +?): {key_elsewhere(key)}drop it; {LISTS_THE_KEYS}")
    _check_group_names(cfg)
    _check_tags(cfg.mlflow.tags)
    checks = [
        ("optimizer.lr", cfg.optimizer.lr > 0, "must be > 0"),
        ("optimizer.weight_decay", cfg.optimizer.weight_decay >= 0, "must be >= 0"),
        ("data.path", bool(cfg.data.path.strip()),
         "must not be empty (an unset shell variable?): give your copy's folder or archive, or . for this folder"),
        ("data.cache_dir", bool(cfg.data.cache_dir.strip()), "must not be empty: give a folder, or . for this folder"),
        ("data.path", not cfg.data.path.startswith("~"), NO_TILDE),
        ("data.cache_dir", not cfg.data.cache_dir.startswith("~"), NO_TILDE),
        ("data.batch_size", cfg.data.batch_size > 0, "must be > 0"),
        ("data.eval_batch_size", cfg.data.eval_batch_size is None or cfg.data.eval_batch_size > 0,
         "must be > 0 or null (the device's default)"),
        ("data.val_size", cfg.data.val_size >= 0, "must be >= 0 (0: train on every training image, no validation)"),
        ("data.limit", cfg.data.limit is None or cfg.data.limit > 0, "must be > 0 or null (all)"),
        (
            "data.test_limit",
            cfg.data.test_limit is None or cfg.data.test_limit > 0,
            "must be > 0 or null (all)",
        ),
        ("data.augment.crop_padding", cfg.data.augment.crop_padding >= 0, "must be >= 0"),
        ("data.augment.pad_mode", cfg.data.augment.pad_mode in PAD_MODES, f"must be one of {PAD_MODES}"),
        ("data.augment.cutout", 0 <= cfg.data.augment.cutout <= IMAGE_SIZE,
         f"must be between 0 (off) and {IMAGE_SIZE}, the image side"),
        ("trainer.epochs", cfg.trainer.epochs >= 1, "must be >= 1"),
        ("seed", 0 <= cfg.seed < 2**32, "must be in [0, 2**32)"),
        ("trainer.device", _device_kind(cfg.trainer.device) in DEVICES, f"must be one of {DEVICES} (or cuda:N)"),
        ("trainer.patience", cfg.trainer.patience is None or cfg.trainer.patience >= 1, "must be >= 1 or null (off)"),
        ("trainer.patience", cfg.trainer.patience is None or cfg.data.val_size > 0,
         "needs a validation set: set data.val_size > 0, or trainer.patience=null"),
        ("trainer.ema_decay", cfg.trainer.ema_decay is None or 0 < cfg.trainer.ema_decay < 1,
         "must be in (0, 1) or null (off)"),
        ("trainer.lookahead_every", cfg.trainer.lookahead_every is None or cfg.trainer.lookahead_every >= 1,
         "must be >= 1 or null (off)"),
        ("trainer.lookahead_decay", 0 <= cfg.trainer.lookahead_decay < 1, "must be in [0, 1)"),
        ("trainer.whiten_bias_epochs", cfg.trainer.whiten_bias_epochs is None or cfg.trainer.whiten_bias_epochs >= 0,
         "must be >= 0 or null (trained throughout)"),
        ("trainer.whiten_bias_epochs", cfg.trainer.whiten_bias_epochs is None or cfg.trainer.whiten,
         "needs trainer.whiten=true: set it, or trainer.whiten_bias_epochs=null"),
        (
            "data.augment.alternate_flip",
            cfg.data.augment.flip or not cfg.data.augment.alternate_flip,
            "needs data.augment.flip=true",
        ),
        ("trainer.label_smoothing", 0 <= cfg.trainer.label_smoothing < 1, "must be in [0, 1)"),
        ("trainer.grad_clip_norm", cfg.trainer.grad_clip_norm is None or cfg.trainer.grad_clip_norm > 0,
         "must be > 0 or null (off)"),
        ("trainer.checkpoint_every", cfg.trainer.checkpoint_every >= 1, "must be >= 1"),
        ("trainer.threads", cfg.trainer.threads is None or cfg.trainer.threads >= 1, "must be >= 1 or null (auto)"),
        ("mlflow.experiment", bool(cfg.mlflow.experiment.strip()), "must not be empty"),
        ("mlflow.register_model", cfg.mlflow.log_model or not cfg.mlflow.register_model, "needs mlflow.log_model=true"),
        ("mlflow.model_name", bool(cfg.mlflow.model_name.strip()), "must not be empty"),
        ("mlflow.model_name", not cfg.mlflow.register_model or _registrable(cfg.mlflow.model_name),
         "is a name that MLflow's model registry refuses (one with '/' or ':', or '.' or one led by '..'; the default "
         "is named after mlflow.experiment): set mlflow.model_name to another"),
        ("mlflow.store_wait_s", cfg.mlflow.store_wait_s >= 0, "must be >= 0 (0: stop at the first failure)"),
        ("mlflow.run_name", cfg.mlflow.run_name is None or bool(str(cfg.mlflow.run_name).strip()),
         "must not be empty: give a name, or null (the run's overrides name it)"),
        ("diagnostics.epochs", all(1 <= e <= cfg.trainer.epochs for e in cfg.diagnostics.epochs),
         "must list epochs between 1 and trainer.epochs"),
        ("diagnostics.epochs", not cfg.diagnostics.epochs or cfg.data.val_size > 0,
         "needs a validation set (the diagnostics come from its pass): set data.val_size > 0, or diagnostics=none"),
        ("diagnostics.samples",
         1 <= cfg.diagnostics.samples and (not cfg.diagnostics.epochs or cfg.diagnostics.samples <= cfg.data.val_size),
         "must be between 1 and data.val_size"),
    ]
    if "momentum" in cfg.optimizer:
        checks.append(("optimizer.momentum", 0 <= cfg.optimizer.momentum < 1, "must be in [0, 1)"))
        checks.append(("optimizer.nesterov", not cfg.optimizer.nesterov or cfg.optimizer.momentum > 0,
                       "needs optimizer.momentum > 0: set optimizer.nesterov=false"))
    if cfg.model.name == "simplecnn":
        checks.append(("model.channels", 1 <= len(cfg.model.channels) <= 5 and min(cfg.model.channels) > 0,
                       "must be 1 to 5 widths > 0: a conv block each, each halving the 32-pixel side"))
        checks.append(("model.hidden", cfg.model.hidden > 0, "must be > 0"))
    if cfg.model.name == "resnet9":
        checks.append(("model.channels", len(cfg.model.channels) == 4 and min(cfg.model.channels) > 0,
                       "must be 4 widths > 0: the prep layer's and the three stages'"))
    if cfg.model.name == "airbench":
        checks.append(("model.widths", len(cfg.model.widths) == 3 and min(cfg.model.widths) > 0,
                       "must be 3 widths > 0: one per conv group"))
    checks.append(("optimizer.norm_bias_lr_scale", cfg.optimizer.norm_bias_lr_scale > 0, "must be > 0"))
    if "dropout" in cfg.model:
        checks.append(("model.dropout", 0 <= cfg.model.dropout < 1, "must be in [0, 1)"))
    if "muon_lr" in cfg.optimizer:
        checks += [
            ("optimizer.muon_lr", cfg.optimizer.muon_lr > 0, "must be > 0"),
            ("optimizer.muon_momentum", 0 <= cfg.optimizer.muon_momentum < 1, "must be in [0, 1)"),
            ("optimizer.ns_steps", cfg.optimizer.ns_steps >= 1, "must be >= 1"),
        ]
    if "betas" in cfg.optimizer:
        betas = cfg.optimizer.betas
        checks.append(("optimizer.betas", len(betas) == 2 and all(0 <= b < 1 for b in betas),
                       "must be 2 values in [0, 1)"))
    if "div_factor" in cfg.scheduler:
        checks.append(("scheduler.div_factor", cfg.scheduler.div_factor > 0,
                       "must be > 0 (the first lr is the peak / it)"))
        checks.append(("scheduler.final_div_factor", cfg.scheduler.final_div_factor > 0,
                       "must be > 0 (the last lr is the first / it)"))
    if "min_lr_ratio" in cfg.scheduler:
        checks.append(("scheduler.min_lr_ratio", 0 <= cfg.scheduler.min_lr_ratio <= 1, "must be in [0, 1]"))
    if "pct_start" in cfg.scheduler:
        checks.append(("scheduler.pct_start", 0 <= cfg.scheduler.pct_start < 1,
                       "must be in [0, 1) (0: no warm-up, the first step at the peak)"))
    if "anneal" in cfg.scheduler:
        checks.append(("scheduler.anneal", cfg.scheduler.anneal in ANNEALS, f"must be one of {ANNEALS}"))
    if "cycle_momentum" in cfg.scheduler:
        checks.append(("scheduler.base_momentum", 0 <= cfg.scheduler.base_momentum <= cfg.scheduler.max_momentum < 1,
                       "must be in [0, scheduler.max_momentum], with scheduler.max_momentum < 1"))
        if "muon_momentum" in cfg.optimizer:
            checks.append(("scheduler.cycle_momentum", not cfg.scheduler.cycle_momentum,
                           "would cycle Muon's momentum too (optimizer.muon_momentum): "
                           "set scheduler.cycle_momentum=false"))
        if cfg.optimizer.get("momentum") == 0:
            checks.append(("scheduler.cycle_momentum", not cfg.scheduler.cycle_momentum,
                           "would give SGD momentum where optimizer.momentum=0: set scheduler.cycle_momentum=false"))
    if "warmup_epochs" in cfg.scheduler:
        checks.append(("scheduler.warmup_epochs", cfg.scheduler.warmup_epochs >= 0, "must be >= 0"))
    for key, ok, rule in checks:
        if not ok:
            value = _lookup(cfg, key)
            raise ConfigError(f"{key}={value} is out of range: it {rule}. {FIX_THE_VALUE}")


# MLflow's rules for a tag's name (mlflow.utils.validation, in a module that does not import MLflow)
TAG_NAME = re.compile(r"[/\w.\- :]{1,250}")
TAG_NAME_RULE = "MLflow takes 1 to 250 letters, digits, spaces and _ . - / :, and no path such as a/../b or a//b"


def _check_tags(tags: Any) -> None:
    """Refuse a tag of ``mlflow.tags`` that MLflow would refuse once the run has started, or that the runs set
    themselves (their commit, data hash, device, ...), which it would replace; and one whose value is not one value
    (the schema's str values do not stop ``+mlflow.tags={c:{d:1}}``)."""
    for key, value in tags.items():
        name = str(key)  # a DVC run's params.yaml is untyped: a YAML key of digits is an int
        if OmegaConf.is_config(value):
            raise ConfigError(f"mlflow.tags.{name} holds {OmegaConf.to_yaml(value, sort_keys=False).strip()!r}, and a "
                              "tag's value is one piece of text: give it a value, or a tag for each of those")
        if not TAG_NAME.fullmatch(name) or posixpath.normpath(name) != name:
            raise ConfigError(f"mlflow.tags.{name} is a tag name that MLflow refuses ({TAG_NAME_RULE}): "
                              "give the tag another name")
        if is_own_tag(name):
            raise ConfigError(f"mlflow.tags.{name} is a tag that the runs set themselves (mlflow.*, git.*, data.*, "
                              "device, ...): give the tag another name"
                              + ("; a run's description is mlflow.description" if name == NOTE_TAG else ""))


NAMED_GROUPS = ("model", "optimizer", "scheduler", "data")  # each option's name says what is built


def _check_group_names(cfg: Any) -> None:
    """A group's ``name`` says what is built (the model, optimizer, ...), its other keys how: refuse a name of no
    option (it failed with a traceback, or trained on: ``data.name=cifar100`` on CIFAR-10) and keys that are not
    the named option's (``model.name=resnet18`` beside simplecnn's settings trained a ResNet-18, its params logging
    simplecnn's widths and dropout). Keys, not schemas: a DVC run's params.yaml holds the config untyped."""
    for group in NAMED_GROUPS:
        options, name, keys = GROUP_SCHEMAS[group], cfg[group].name, list(cfg[group])
        if name not in options:
            raise ConfigError(f"{group}.name={name} is not one of the {group} options ({', '.join(options)}): "
                              f"choose one with {group}=NAME, which sets its name and settings")
        fields = [f.name for f in dataclasses.fields(options[name])]
        extra, missing = [k for k in keys if k not in fields], [k for k in fields if k not in keys]
        differences = []
        if extra:
            differences.append(f"{name} has no {', '.join(extra)}")
        if missing:
            differences.append(f"{name} needs {', '.join(missing)}")
        if differences:
            raise ConfigError(f"{group}.name={name} does not match the {group}'s other settings "
                              f"({'; '.join(differences)}): choose it with {group}={name}, which sets its name and "
                              "settings together")


def _unknown_keys(node: DictConfig, prefix: str = "", schema: type | None = Config,
                  own_keys: bool = True) -> Iterator[str]:
    """Keys that no schema declares: Hydra lets ``+key=value`` add them, and nothing would read them. A node without
    its schema (a DVC run's params.yaml holds the config untyped, and ``dvc exp run -S +lr=1e-3`` adds to it) is
    checked against the one of its place, ``schema``; an untyped named group's own keys are
    :func:`_check_group_names`' (not ``own_keys``), the keys below them its named option's."""
    if dataclasses.is_dataclass(typed := OmegaConf.get_type(node)):
        schema, own_keys = typed, True
    declared = typing.get_type_hints(schema) if schema is not None else {}
    for key in node:
        if own_keys and schema is not None and key not in declared:
            yield f"{prefix}{key}"
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            named = schema is Config and key in NAMED_GROUPS
            place = GROUP_SCHEMAS[key].get(child.get("name")) if named else declared.get(key)
            yield from _unknown_keys(child, f"{prefix}{key}.", place if dataclasses.is_dataclass(place) else None,
                                     own_keys=not named)


def _registrable(name: str) -> bool:
    """Whether MLflow's model registry takes ``name`` (mlflow.utils.validation's rules, in a module that does not
    import MLflow): no '/' or ':', no '.', nothing led by '..'."""
    return not set(name) & {"/", ":"} and name != "." and not name.startswith("..")


def _device_kind(device: str) -> str:
    return device.split(":", 1)[0]


def _lookup(cfg: Any, dotted: str) -> Any:
    """The value at ``dotted``, a list or mapping with its interpolations resolved (as the run would see it)."""
    node = OmegaConf.select(cfg, dotted)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
