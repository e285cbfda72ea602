"""MLflow tracking: the store, the runs' names, and one run per job, ended whatever stops it.

A sweep's jobs are nested under its parent run (:mod:`cifar.sweep_run`), whose id they read from
``<sweep dir>/mlflow_sweep.json`` (:func:`read_sweep`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlparse

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from cifar import dvc_exp, owner
from cifar.credentials import without_passwords
from cifar.errors import ConfigError, UserError, first_line
from cifar.outages import Retrying, StoreOutage, try_once
from cifar.output_dirs import latest_below
from cifar.stores import opened_one_at_a_time, sqlite_file, unusable

log = logging.getLogger(__name__)
T = TypeVar("T")

SWEEP_FILE = "mlflow_sweep.json"
STORE_VAR = "MLFLOW_TRACKING_URI"
# Overrides that say where or how a job runs or what it records, not what it trains: left out of run names, and
# free to differ between the sweeps of an Optuna study (cifar.study.trial_settings).
NOT_IN_RUN_NAMES = frozenset({
    "data.path", "data.cache_dir", "data.download", "data.eval_batch_size", "trainer.device", "trainer.progress",
    "trainer.threads", "trainer.resume", "trainer.checkpoint_every",
})
NOT_IN_RUN_NAMES_PREFIXES = ("mlflow.", "diagnostics")
DEFAULTS_NAME = "defaults"  # the name of a run that overrides nothing that names it
MODEL_SIZE_PARAMS = ("model.parameters", "model.flops_per_image")  # logged with the config's params
# Config groups whose options set keys across the config and carry no name: a run logs its choice as a param
PRESET_GROUPS = ("experiment", "hparams_search", "debug", "diagnostics")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # opens the UI on the training-runs table
BEST_VAL_ACC = "val/best_acc"
RUN_SECONDS = "run_seconds"  # each epoch and at the end: the wall time of a run, over its processes where resumed
SWEEP_DIR_TAG = "cifar.sweep_dir"  # set on sweep parent runs only
FIXED_OVERRIDES_TAG = "cifar.fixed_overrides"  # on a sweep's parent run: what every job trains with (a JSON list)
BEST_RUN_TAG = "best_run_id"  # on a sweep's parent run: its best job's run
REGISTERED_RUN_TAG = "registered_run_id"  # on a sweep's parent run: the job whose model it registered
STUDY_NAME_TAG = "optuna.study_name"
STUDY_STORAGE_TAG = "optuna.storage"  # on the parent run of an Optuna sweep
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.trial_state"  # COMPLETE, PRUNED or FAIL, set on each trial when the sweep ends
PRUNED_TAG = "pruned"  # "true" on a trial's run that its pruner stopped (or that diverged)
# The run's output dir: its checkpoints and logs. For a DVC experiment run in a temp copy of the repo, the same
# path in the repo, where `dvc exp apply` puts them (the copy is deleted)
OUTPUT_DIR_TAG = "hydra.output_dir"
BEST_CHECKPOINT_TAG = "best_checkpoint.md5"  # of the run's best.pt once trained: it is this run's while unchanged
OWNER_TAG = "cifar.owner"  # the process that runs the run (cifar.owner): to close it if that process dies
NOTE_TAG = "mlflow.note.content"  # a run's description, as the MLflow UI shows and edits it
USER_TAG_KEYS = "mlflow.tags."  # the config's keys of the tags of one's own
# Not what a run trains, so no params, and free to change on a resume: how it was started, how long it waits for its
# store, and its name, description and tags of one's own (USER_TAG_KEYS), which it logs as such
NOT_PARAMS = ("trainer.resume", "mlflow.store_wait_s", "mlflow.run_name", "mlflow.description")
# The tags that runs and sweeps' parent runs set themselves (MLflow's own too): mlflow.tags may not set them
OWN_TAG_PREFIXES = ("mlflow.", "cifar.", "hydra.", "git.", "data.", "dvc.", "optuna.", "torch.", "submitit.", "best.",
                    "best_")
OWN_TAGS = frozenset({"device", "amp", "amp.dtype", "compile", "cuda_visible_devices", PRUNED_TAG, "diverged",
                      "stopped_early", REGISTERED_RUN_TAG, "registered_model"})
STOPPED_RUN_WAIT_S = 60  # how long a run stopped by an interrupt or an error waits for its store to record it
STORE_SETUP_ATTEMPTS = 5  # first contacts with a database store whose tables another worker is creating
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent.name  # the code that a run runs, in PROJECT_ROOT


def existing_store(uri: str | None) -> str:
    """The MLflow store a command reads (``uri``, else MLflow's default: ``MLFLOW_TRACKING_URI``, then
    ``sqlite:///mlflow.db``), refused where it is a SQLite file that does not exist: opening it would
    create an empty store, such as a stray mlflow.db in whatever folder the command ran from."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    if (database := sqlite_file(uri)) is not None and not database.exists():
        raise UserError(f"no MLflow store at {database.resolve()}: run from the folder that holds it, "
                        "or give --tracking-uri / MLFLOW_TRACKING_URI")
    if reason := unusable_mlflow_store(uri):
        raise UserError(f"the MLflow store {uri} cannot be read: {reason}")
    return uri


def chosen_store(uri: str | None, sweep: dict | None) -> str | None:
    """The store that a command reads for ``uri`` (its ``--tracking-uri``) and the sweep it was given by its dir
    (:func:`read_sweep`, or None): ``uri``, else ``MLFLOW_TRACKING_URI``, else the store the sweep logged to, else
    None (MLflow's default, ``sqlite:///mlflow.db`` in the working directory)."""
    return uri or os.environ.get(STORE_VAR) or (sweep or {}).get("tracking_uri")


def portable_store(uri: str) -> str:
    """``uri`` as a process in another folder finds it: a SQLite file's path made absolute; no password."""
    database = sqlite_file(uri)
    return f"sqlite:///{database.resolve()}" if database is not None else without_passwords(uri)


def unusable_mlflow_store(uri: str) -> str | None:
    """Why the MLflow store ``uri`` cannot be used and what to do (:func:`cifar.stores.unusable`, or a file store
    that MLflow refuses), or None where it can be tried."""
    return refused_file_store(uri) or unusable(uri)


NAMED_STORES = frozenset({"databricks", "databricks-uc", "uc"})  # MLflow's store URIs without a scheme


def refused_file_store(uri: str) -> str | None:
    """What to do where ``uri`` is a file store (a folder of runs, as MLflow 2's ``./mlruns``), which MLflow 3
    refuses with a paragraph unless MLFLOW_ALLOW_FILE_STORE is set; None for any other store."""
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    if uri in NAMED_STORES or urlparse(uri).scheme not in ("", "file") or MLFLOW_ALLOW_FILE_STORE.get():
        return None
    return ("it is a file store (a folder of runs), which MLflow 3 refuses by default: use a database, such as "
            "sqlite:///mlflow.db (mlflow migrate-filestore --source FOLDER --target sqlite:///mlflow.db copies "
            "the folder's runs into it), or set MLFLOW_ALLOW_FILE_STORE=true to use the folder")


def store_errors() -> tuple[type[Exception], ...]:
    """What reading an MLflow store raises where it cannot be read: MLflow's errors (an unknown scheme,
    a server that does not answer) and, from a database store, SQLAlchemy's (the connection refused)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return MlflowException, SQLAlchemyError


def unreadable_store(uri: str, err: Exception) -> str:
    """What to say of an MLflow store that a command cannot read (unknown scheme, server down)."""
    return (f"the MLflow store {without_passwords(uri)} cannot be read ({first_line(err)}): "
            "check --tracking-uri / MLFLOW_TRACKING_URI")


def existing_run(client: Any, run_id: str) -> Any | None:
    """MLflow run ``run_id``, or None where the store has no such run; other store errors are raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def use_experiment(uri: str, name: str, retrying: Retrying | None = None) -> str:
    """Point MLflow at the store ``uri`` (from :func:`usable_store`) and its experiment ``name``, made
    if it is new; return the experiment id. With ``retrying`` (a sweep's job, whose store answered when the
    sweep started) a store that stops answering is waited for; without, it is refused (UserError)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return retrying(_set_experiment, uri, name) if retrying else _set_experiment(uri, name)
    except UserError:
        raise
    except Exception as err:  # stores fail with many error types (sqlalchemy, requests, OS)
        raise UserError(
            f"MLflow tracking store {uri} cannot be used ({type(err).__name__}: "
            f"{first_line(err)}): check mlflow.tracking_uri or MLFLOW_TRACKING_URI"
        ) from err


def _set_experiment(uri: str, name: str) -> str:
    import mlflow

    with opened_one_at_a_time(uri):  # MLflow creates a new store's tables
        experiment = while_created_elsewhere(mlflow.get_experiment_by_name, name)
    if experiment is None:
        try:
            mlflow.create_experiment(name, dvc_exp.artifact_location(uri),
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile by a parallel job
        experiment = mlflow.get_experiment_by_name(name)
    refuse_deleted(experiment, uri)
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return experiment.experiment_id


def refuse_deleted(experiment: Any, uri: str) -> None:
    """Refuse (ConfigError) an experiment that was deleted, which MLflow neither uses nor makes again under its
    name, with the command that restores it."""
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(f"mlflow.experiment={experiment.name} was deleted from {uri}: restore it with "
                          f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, or choose another "
                          "mlflow.experiment")  # the URL's password left out, as in every UserError


def usable_store(cfg_mlflow: Any) -> str:
    """:func:`store_uri`, refused (UserError) where its database driver is not installed or its server
    does not answer: checked without opening the store, which would create a SQLite file."""
    uri = store_uri(cfg_mlflow)
    if reason := unusable_mlflow_store(uri):
        raise UserError(f"MLflow tracking store {uri} cannot be used: {reason}")
    return uri


def store_uri(cfg_mlflow: Any) -> str:
    """The MLflow store that runs log to: ``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else
    MLflow's default (``sqlite:///mlflow.db`` in the working directory: in a DVC experiment's temp copy
    of the repo, the repo's own, :mod:`cifar.dvc_exp`)."""
    import mlflow

    mlflows_own = store_setting() == STORE_VAR or not cfg_mlflow.tracking_uri
    return dvc_exp.store_in_repo(mlflow.get_tracking_uri() if mlflows_own else cfg_mlflow.tracking_uri)


def store_setting() -> str:
    """The setting that chooses the store of :func:`store_uri`, to name it in errors."""
    return STORE_VAR if os.environ.get(STORE_VAR) else "mlflow.tracking_uri"


def while_created_elsewhere(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``, the first contact with a database store, tried again while another process
    creates the store's tables: workers that start at once on a new database race to create them,
    and the losers' CREATE statements fail (duplicate type or relation)."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for _ in range(STORE_SETUP_ATTEMPTS - 1):
        try:
            return call(*args)
        except (IntegrityError, ProgrammingError) as err:
            log.info("Store tables being created by another process (%s): trying again", first_line(err))
            time.sleep(1)
    return call(*args)


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as MLflow params, ``{"optimizer.lr": "0.001", ...}``: lists kept whole, URLs
    without their passwords."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = without_passwords(str(node))

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


DATA_HASH_TAG = "data.hash"  # on each run: the hash of its decoded images and labels
DATASET_DIGEST_CHARS = 12  # of the data's hash: the digest that the MLflow UI shows beside its name, and the report


def dataset_input(name: str, path: str, content_hash: str) -> Any:
    """The data a run trains on as an MLflow dataset, for ``mlflow.log_input``: its name, where it was read and a
    digest of its decoded images and labels, which the runs table's Dataset column shows and runs are searched by
    (``dataset.digest = '...'``). Metadata only: the data stays where it is."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # MLflow's local source is registered twice (paths, file: URIs) and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(path)
    return MetaDataset(source, name=name, digest=content_hash[:DATASET_DIGEST_CHARS])


@functools.cache
def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The commit of the code that runs, and whether the code differs from it: a non-empty
    :func:`uncommitted_diff` (once per process)."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(uncommitted_diff(root))).lower()}


@functools.cache
def uncommitted_diff(root: Path = PROJECT_ROOT) -> str:
    """How the code differs from ``git.commit``, as a patch for ``git apply``: the tracked files' changes
    (``git diff HEAD``) and the package's files that git does not track yet (a new module), as new files. With
    the commit, the exact code of a run whose ``git.dirty`` is true. Empty where there is no difference, or no
    git checkout. Other untracked files (notes, outputs) are not the run's code."""
    try:
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", PACKAGE).split("\0")
        return _git(root, "diff", "HEAD", "--binary") + "".join(
            _git(root, "diff", "--no-index", "--binary", "/dev/null", path, differs=True) for path in untracked if path)
    except (OSError, subprocess.SubprocessError):
        return ""


def _git(root: Path, *args: str, differs: bool = False) -> str:
    """git's output; ``differs``: a ``git diff --no-index`` that exits with 1 for files that differ."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, errors="replace", timeout=10)
    if done.returncode not in ((0, 1) if differs else (0,)):
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_name(overrides: list[str], swept: list[str] | None = None) -> str:
    """The run's overrides that change what it trains, or a sweep's job's ``swept`` ones, whatever they change
    (``trainer.threads=2``, ``mlflow.tags.phase=a``: they tell its jobs apart), with their numbers shortened for
    reading (the params keep every digit)."""
    kept = [o for o in overrides
            if (override_key(o) in swept if swept is not None else names_the_training(override_key(o)))]
    return truncate(",".join(sorted(_short_number(o.lstrip("+")) for o in kept))) or DEFAULTS_NAME


def _short_number(override: str) -> str:
    """``key=value`` with a number of more than 4 significant digits rounded to 4, as Optuna's
    samples are (``optimizer.lr=0.0020228662931987577`` -> ``optimizer.lr=0.002023``)."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:  # not a number
        return override
    short = f"{number:.4g}"
    return f"{key}={short}" if float(short) != number and len(short) < len(value) else override


def is_own_tag(key: str) -> bool:
    """Whether the runs set tag ``key`` themselves (:data:`OWN_TAGS`, :data:`OWN_TAG_PREFIXES`)."""
    return key in OWN_TAGS or key.startswith(OWN_TAG_PREFIXES)


def is_param(key: str) -> bool:
    """Whether config key ``key`` is logged as a param (:data:`NOT_PARAMS`, :data:`USER_TAG_KEYS`)."""
    return key not in NOT_PARAMS and not key.startswith(USER_TAG_KEYS)


def names_each_run(mlflow_cfg: DictConfig) -> bool:
    """Whether ``mlflow.run_name`` has an interpolation (``lr${optimizer.lr}``): then it names each run with its own
    values, a sweep's jobs too; a plain name names a sweep's parent run."""
    return "${" in str(OmegaConf.to_container(mlflow_cfg, resolve=False)["run_name"] or "")


def user_tags(mlflow_cfg: DictConfig) -> dict[str, str]:
    """The tags that ``mlflow.tags`` gives a run."""
    return {str(key): str(value) for key, value in mlflow_cfg.tags.items()}


def description(mlflow_cfg: DictConfig, command: str = "") -> dict[str, str]:
    """The tag of a run's description: ``mlflow.description``, then ``command`` where given (a sweep's parent
    run's); none where both are empty."""
    note = "\n\n".join(text for text in (mlflow_cfg.description, command) if text)
    return {NOTE_TAG: note} if note else {}


def preset_choices(hydra_cfg: DictConfig) -> dict[str, str]:
    """The options chosen of the ``PRESET_GROUPS``, as params named after their group (``experiment: fast``): the
    config holds the keys they set, not which preset set them (as ``model.name`` says which model)."""
    choices = hydra_cfg.runtime.choices
    return {group: choices[group] for group in PRESET_GROUPS if choices.get(group) is not None}


def names_the_training(key: str) -> bool:
    return key not in NOT_IN_RUN_NAMES and not key.startswith(NOT_IN_RUN_NAMES_PREFIXES)


def sweep_overrides(config: DictConfig) -> list[str]:
    """The multirun's sweep overrides as typed (``optimizer.lr=1e-3,5e-4``)."""
    return [o.input_line for o in _overrides(config) if o.is_sweep_override()]


def fixed_overrides(config: DictConfig) -> list[str]:
    """The multirun's overrides that are not swept and change what every job trains (``model=resnet9``), as typed:
    the jobs' names leave them out."""
    return [o.input_line for o in _overrides(config) if not o.is_sweep_override() and _names_the_sweep(o)]


def sweep_naming_overrides(config: DictConfig) -> list[str]:
    """The multirun's overrides that name its sweep's parent run, as typed: those swept, and the fixed ones."""
    return [o.input_line for o in _overrides(config) if o.is_sweep_override() or _names_the_sweep(o)]


def _overrides(config: DictConfig) -> list[Any]:
    return OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))


def _names_the_sweep(override: Any) -> bool:
    return names_the_training(override_key(override.input_line))


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that vary across a multirun's jobs: sweep overrides and the sweeper's search space."""
    keys = [override_key(o) for o in sweep_overrides(config)]
    search_space = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [key for key in search_space if key not in keys]


def read_sweep(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``{"parent_run_id": ..., "swept_keys": [...]}`` written at the sweep's start, if any."""
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def sweep_near(path: Path, option: str) -> str | None:
    """For a dir that is no sweep's, where it is near one, what it is and the sweep to give ``option`` instead: a
    job's dir (its sweep), or a folder of sweeps such as ``multirun/`` or ``multirun/<date>/`` (the latest
    written). None elsewhere."""
    if (path.parent / SWEEP_FILE).exists():
        return f"{option} {path} is a job's dir of a sweep: give {option} {path.parent}, the sweep"
    return latest_below(path, SWEEP_FILE, "sweep", option)


def search_all_runs(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """The runs that ``filter_string`` finds, all of them: ``client.search_runs`` returns a page at a time (1,000
    runs at most), and the next one on request."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, page_token=token)
        runs += page
        if not (token := page.token):
            return runs


def sweep_jobs(client: Any, parent: Any, where: str = "") -> list[Any]:
    """The runs of a sweep's jobs: the children of its parent run ``parent`` (those that the MLflow search filter
    ``where`` finds, if given)."""
    children = f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    return search_all_runs(client, [parent.info.experiment_id], f"{children} and {where}" if where else children)


def run_to_take_up(client: Any, run_id: str, what: str) -> Any:
    """MLflow run ``run_id`` (``what`` names it), refused (ConfigError) where the store does not hold it
    or it was deleted: ``trainer.resume=true`` continues it."""
    run = existing_run(client, run_id)
    if run is None:
        raise ConfigError(
            f"trainer.resume=true but {what} {run_id} is not in the store {client.tracking_uri}: "
            "resume with the store it was logged to (MLFLOW_TRACKING_URI or mlflow.tracking_uri), or drop "
            "trainer.resume"
        )
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"trainer.resume=true but {what} {run_id} was deleted: restore it with "
            f"`mlflow runs restore --run-id {run_id}`, or drop trainer.resume"
        )
    return run


def owner_is_gone(run: Any) -> bool:
    """Whether the process that ran ``run`` (its owner tag) is gone (:func:`cifar.owner.is_gone`)."""
    return owner.is_gone(run.data.tags.get(OWNER_TAG, ""))


def still_running(run: Any) -> bool:
    """Whether ``run`` is RUNNING in a process that is not gone: another process still runs it."""
    return run.info.status == "RUNNING" and not owner_is_gone(run)


def running_process(run: Any) -> str:
    """The process that runs ``run`` (its owner tag), as a refusal to take it up or share its dir names it."""
    return run.data.tags.get(OWNER_TAG, "(unknown)")


def refuse_running(run: Any, what: str) -> None:
    """Refuse (ConfigError) to take up ``run`` (``what`` names it) while another process still runs it."""
    if still_running(run):
        raise ConfigError(
            f"trainer.resume=true but {what} {run.info.run_id} is still RUNNING, in process {running_process(run)}: "
            "stop that process (Ctrl-C or SIGTERM) or wait for it, then resume"
        )


def dir_in_use(dir_key: str, output_dir: str | Path, what: str, run: Any, run_kind: str) -> ConfigError:
    """The refusal of a new ``what`` (run, sweep) in ``dir_key`` (``hydra.run.dir``) = ``output_dir``, where the
    ``what`` there still runs (``run``, its ``run_kind``: MLflow run, or parent run): each would write over the
    other's files."""
    return ConfigError(f"{dir_key}={output_dir} holds a {what} that is still running ({run_kind} {run.info.run_id}, in "
                       f"process {running_process(run)}): give this {what} another {dir_key}, or stop that {what} "
                       "(Ctrl-C or SIGTERM) first")


def run_still_running_in(cfg_mlflow: Any, output_dir: Path) -> Any | None:
    """The MLflow run, in the experiment that ``cfg_mlflow`` logs to, that another process still runs in
    ``output_dir`` (:func:`still_running`); None where there is none, or where the store cannot be read yet (a
    SQLite file not made, a server that does not answer: the run says so itself, in one line)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(existing_store(store_uri(cfg_mlflow)))
        experiment = client.get_experiment_by_name(cfg_mlflow.experiment)
        running = [] if experiment is None else search_all_runs(client, [experiment.experiment_id],
                                                                "attributes.status = 'RUNNING'")
    except (UserError, *store_errors()):
        return None
    here = str(output_dir.resolve())
    return next((run for run in running if run.data.tags.get(OUTPUT_DIR_TAG) == here and still_running(run)), None)


def changed_settings(before: dict[str, str], after: dict[str, Any]) -> list[str]:
    """The keys of both whose values differ (``after``'s as MLflow logs them: strings), sorted, as one names the
    change: a config group switched to another option by its ``name`` alone, not each of its keys, and the model's
    size (``MODEL_SIZE_PARAMS``, which follows from its config) only where nothing else changed."""
    changed = sorted(key for key, value in after.items() if key in before and before[key] != str(value))
    swapped = tuple(f"{key.removesuffix('.name')}." for key in changed if key.endswith(".name"))
    changed = [key for key in changed if key.endswith(".name") or not key.startswith(swapped)]
    configured = [key for key in changed if key not in MODEL_SIZE_PARAMS]
    return configured or changed


def run_to_resume(run_id: str, params: dict[str, Any]) -> Any:
    """MLflow run ``run_id``, refused (ConfigError) where the store does not hold it or ``params`` differ
    from those it logged."""
    from mlflow.tracking import MlflowClient

    run = run_to_take_up(MlflowClient(), run_id, "the interrupted run's MLflow run")
    refuse_running(run, "MLflow run")
    logged = run.data.params
    if changed := changed_settings(logged, params):
        diffs = ", ".join(f"{key}: {logged[key]} -> {params[key]}" for key in changed)
        raise ConfigError(
            f"trainer.resume=true with a config that differs from the interrupted run's ({diffs}): "
            "resume with the same overrides, or start a new run without trainer.resume"
        )
    return run


def close_stale_runs(client: Any, experiment_id: str) -> int:
    """End KILLED the experiment's RUNNING runs whose process on this machine is gone; return how many."""
    running = search_all_runs(client, [experiment_id], "attributes.status = 'RUNNING'")
    stale = [r for r in running if owner_is_gone(r)]
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    if stale:
        log.warning("Ended %d MLflow run(s) KILLED that a killed process had left RUNNING: %s",
                    len(stale), ", ".join(r.info.run_name for r in stale))
    return len(stale)


_started_runs: list[str] = []  # the MLflow runs that job_run started or continued in this process


def started_a_run() -> bool:
    """Whether :func:`job_run` started (or continued) an MLflow run in this process."""
    return bool(_started_runs)


@contextlib.contextmanager
def job_run(run_name: str, parent_id: str | None, tags: dict[str, str], retrying: Retrying,
            run_id: str | None = None) -> Iterator[Any]:
    """An MLflow run that always ends: FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM (or a
    SystemExit: a Ray worker's SIGTERM handler raises one where Ray stops the worker of a stopped sweep's
    job), and on a store outage where the store answers again in time to be told.

    With ``run_id``, that run is continued (a resumed training run) instead of a new one started.
    """
    import mlflow

    tags = {**tags, OWNER_TAG: owner.current()}
    if run_id is not None:
        run = retrying(mlflow.start_run, run_id=run_id, tags=tags)
    else:
        run = retrying(mlflow.start_run, run_name=run_name, parent_run_id=parent_id, tags=tags)
    _started_runs.append(run.info.run_id)
    try:
        yield run
    except StoreOutage:
        try_once(mlflow.end_run, "KILLED")  # waited for already; else the next run here ends it KILLED
        raise
    except BaseException as stopped:
        _end_stopped_run("KILLED" if isinstance(stopped, (KeyboardInterrupt, SystemExit)) else "FAILED", retrying)
        raise
    _end_run("FINISHED", retrying)


def _end_stopped_run(status: str, retrying: Retrying) -> None:
    """End a run that an interrupt or an error stopped, waiting :data:`STOPPED_RUN_WAIT_S` at most for the
    store (an interrupt stops a run within seconds): what stopped it is reported, not the store's outage."""
    try:
        _end_run(status, retrying.at_most(STOPPED_RUN_WAIT_S, "the wait of a stopped run"))
    except StoreOutage as outage:
        log.warning("MLflow run not ended %s: %s; the next run of its experiment here ends it KILLED", status, outage)


def _end_run(status: str, retrying: Retrying) -> None:
    """End the active run, the store told with ``retrying``. ``mlflow.end_run`` cannot be tried again: it
    forgets the run before it tells the store. It is called once the store is told, or has been waited for,
    as MLflow would call it at exit otherwise, with its own retries (minutes)."""
    import mlflow

    try:
        retrying(mlflow.MlflowClient().set_terminated, mlflow.active_run().info.run_id, status)
    finally:
        try_once(mlflow.end_run, status)


def truncate(text: str, limit: int = 250) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
