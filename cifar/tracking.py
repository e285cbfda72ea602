"""MLflow tracking: one run per job, and one parent run per multirun with the jobs nested under it.

The parent run is created by :class:`SweepCallback` in the process that starts the sweep; its id
and the swept keys are written to ``<sweep dir>/mlflow_sweep.json`` so that jobs find them from
any process or machine that sees the sweep directory (the joblib and cluster launchers run jobs
elsewhere). An Optuna sweep's parent run is its study's (:func:`cifar.study.shared_parent_run`):
the workers that share a study, and the sweeps that resume it, log under one parent.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar import launchers, owner, parallel, sweeper, ui
from cifar.credentials import without_passwords
from cifar.errors import AbortRun, ConfigError, UserError, first_line, unwritable_output_dir
from cifar.files import atomic_write_text
from cifar.outages import Retrying, StoreOutage, one_request_a_try, store_outage, try_once
from cifar.stores import unusable

log = logging.getLogger(__name__)
T = TypeVar("T")

SWEEP_FILE = "mlflow_sweep.json"
# Overrides that say where or how a job runs or what it records, not what it trains: left out of run names.
NOT_IN_RUN_NAMES = frozenset({
    "data.path", "data.cache_dir", "data.download", "data.eval_batch_size", "trainer.device", "trainer.progress",
    "trainer.threads",
})
NOT_IN_RUN_NAMES_PREFIXES = ("mlflow.", "diagnostics")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # opens the UI on the training-runs table
BEST_VAL_ACC = "val/best_acc"
SWEEP_DIR_TAG = "cifar.sweep_dir"  # set on sweep parent runs only
BEST_RUN_TAG = "best_run_id"  # on a sweep's parent run: its best job's run
REGISTERED_RUN_TAG = "registered_run_id"  # on a sweep's parent run: the job whose model it registered
STUDY_NAME_TAG = "optuna.study_name"
STUDY_STORAGE_TAG = "optuna.storage"  # on the parent run of an Optuna sweep
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.trial_state"  # COMPLETE, PRUNED or FAIL, set on each trial when the sweep ends
PRUNED_TAG = "pruned"  # "true" on a trial's run that its pruner stopped (or that diverged)
OUTPUT_DIR_TAG = "hydra.output_dir"  # the run's output dir: its checkpoints and logs
OWNER_TAG = "cifar.owner"  # the process that runs the run (cifar.owner): to close it if that process dies
STOPPED_RUN_WAIT_S = 60  # how long a run stopped by an interrupt or an error waits for its store to record it
STORE_SETUP_ATTEMPTS = 5  # first contacts with a database store whose tables another worker is creating
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def existing_store(uri: str | None) -> str:
    """The MLflow store a command reads (``uri``, else MLflow's default: ``MLFLOW_TRACKING_URI``, then
    ``sqlite:///mlflow.db``), refused where it is a SQLite file that does not exist: opening it would
    create an empty store, such as a stray mlflow.db in whatever folder the command ran from."""
    import mlflow
    from sqlalchemy.engine import make_url

    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:"):
        database = make_url(uri).database
        if database and database != ":memory:" and not Path(database).exists():
            raise UserError(f"no MLflow store at {Path(database).resolve()}: run from the folder that holds it, "
                            "or give --tracking-uri / MLFLOW_TRACKING_URI")
    if reason := unusable(uri):
        raise UserError(f"the MLflow store {uri} cannot be read: {reason}")
    return uri


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


def use_experiment(uri: str, name: str) -> str:
    """Point MLflow at the store ``uri`` (from :func:`usable_store`) and its experiment ``name``, made
    if it is new; return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        experiment = while_created_elsewhere(mlflow.get_experiment_by_name, name)
        if experiment is None:
            try:
                mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            except mlflow.exceptions.MlflowException:
                pass  # created meanwhile by a parallel job
            experiment = mlflow.get_experiment_by_name(name)
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
    except Exception as err:  # stores fail with many error types (sqlalchemy, requests, OS)
        raise UserError(
            f"MLflow tracking store {uri} cannot be used ({type(err).__name__}: "
            f"{first_line(err)}): check mlflow.tracking_uri or MLFLOW_TRACKING_URI"
        ) from err
    return experiment.experiment_id


def usable_store(cfg_mlflow: Any) -> str:
    """:func:`store_uri`, refused (UserError) where its database driver is not installed or its server
    does not answer: checked without opening the store, which would create a SQLite file."""
    uri = store_uri(cfg_mlflow)
    if reason := unusable(uri):
        raise UserError(f"MLflow tracking store {uri} cannot be used: {reason}")
    return uri


def store_uri(cfg_mlflow: Any) -> str:
    """The MLflow store that runs log to: ``MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``, else
    MLflow's default (``sqlite:///mlflow.db`` in the working directory)."""
    import mlflow

    if os.environ.get("MLFLOW_TRACKING_URI") or not cfg_mlflow.tracking_uri:
        return mlflow.get_tracking_uri()
    return cfg_mlflow.tracking_uri


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


@functools.cache
def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The commit of the code that runs, and whether tracked files differ from it: a non-empty
    :func:`uncommitted_diff` (once per process)."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(uncommitted_diff(root))).lower()}


@functools.cache
def uncommitted_diff(root: Path = PROJECT_ROOT) -> str:
    """How the tracked files differ from ``git.commit`` (``git diff HEAD``, a patch for ``git apply``):
    with the commit, the exact code of a run whose ``git.dirty`` is true. Empty where there is no
    difference, or no git checkout."""
    try:
        return _git(root, "diff", "HEAD", "--binary")
    except (OSError, subprocess.SubprocessError):
        return ""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, errors="replace", timeout=10,
                          check=True).stdout


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_name(overrides: list[str], only: list[str] | None = None) -> str:
    """The job's overrides that change what it trains (only the swept ones, in a sweep), with their
    numbers shortened for reading (the params keep every digit)."""
    kept = [o for o in overrides if _names_the_training(override_key(o)) and (only is None or override_key(o) in only)]
    return _truncate(",".join(sorted(_short_number(o) for o in kept))) or "defaults"


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


def _names_the_training(key: str) -> bool:
    return key not in NOT_IN_RUN_NAMES and not key.startswith(NOT_IN_RUN_NAMES_PREFIXES)


def sweep_overrides(config: DictConfig) -> list[str]:
    """The multirun's sweep overrides as typed (``optimizer.lr=1e-3,5e-4``)."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    return [o.input_line for o in overrides if o.is_sweep_override()]


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that vary across a multirun's jobs: sweep overrides and the sweeper's search space."""
    keys = [override_key(o) for o in sweep_overrides(config)]
    search_space = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [key for key in search_space if key not in keys]


def read_sweep(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``{"parent_run_id": ..., "swept_keys": [...]}`` written at the sweep's start, if any."""
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _run_to_take_up(client: Any, run_id: str, what: str) -> Any:
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


def _refuse_running(run: Any, what: str) -> None:
    """Refuse (ConfigError) to take up ``run`` (``what`` names it) while it is RUNNING: runs left RUNNING
    by a process gone from this machine were ended KILLED, so another process still runs it."""
    if run.info.status == "RUNNING":
        raise ConfigError(
            f"trainer.resume=true but {what} {run.info.run_id} is still RUNNING, in process "
            f"{run.data.tags.get(OWNER_TAG, '(unknown)')}: stop that process (Ctrl-C or SIGTERM) or wait for it, "
            "then resume"
        )


def run_to_resume(run_id: str, params: dict[str, Any]) -> Any:
    """MLflow run ``run_id``, refused (ConfigError) where the store does not hold it or ``params`` differ
    from those it logged."""
    from mlflow.tracking import MlflowClient

    run = _run_to_take_up(MlflowClient(), run_id, "the interrupted run's MLflow run")
    _refuse_running(run, "MLflow run")
    logged = run.data.params
    changed = sorted(key for key, value in params.items() if key in logged and logged[key] != str(value))
    if changed:
        diffs = ", ".join(f"{key}: {logged[key]} -> {params[key]}" for key in changed)
        raise ConfigError(
            f"trainer.resume=true with a config that differs from the interrupted run's ({diffs}): "
            "resume with the same overrides, or start a new run without trainer.resume"
        )
    return run


def close_stale_runs(client: Any, experiment_id: str) -> int:
    """End KILLED the experiment's RUNNING runs whose process on this machine is gone; return how many."""
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    stale = [r for r in running if owner.is_gone(r.data.tags.get(OWNER_TAG, ""))]
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    if stale:
        log.warning("Ended %d MLflow run(s) KILLED that a killed process had left RUNNING: %s",
                    len(stale), ", ".join(r.info.run_name for r in stale))
    return len(stale)


@contextlib.contextmanager
def job_run(run_name: str, parent_id: str | None, tags: dict[str, str], retrying: Retrying,
            run_id: str | None = None) -> Iterator[Any]:
    """An MLflow run that always ends: FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM, and on
    a store outage where the store answers again in time to be told.

    With ``run_id``, that run is continued (a resumed training run) instead of a new one started.
    """
    import mlflow

    tags = {**tags, OWNER_TAG: owner.current()}
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, tags=tags)
    else:
        run = mlflow.start_run(run_name=run_name, parent_run_id=parent_id, tags=tags)
    try:
        yield run
    except StoreOutage:
        try_once(mlflow.end_run, "KILLED")  # waited for already; else the next run here ends it KILLED
        raise
    except BaseException as stopped:
        _end_stopped_run("KILLED" if isinstance(stopped, KeyboardInterrupt) else "FAILED", retrying)
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


class SweepCallback(Callback):
    """Opens the multirun's parent run before the first job and closes it with a summary."""

    parent_run_id: str | None = None  # set once the sweep's parent run is open

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        optuna_sweep = sweeper.is_optuna_sweep(config.hydra)
        try:
            parallel.check_launcher(config.hydra)
            launchers.check_cluster_answers(config.hydra)
            launchers.check_stores_reach_jobs(config.hydra, _store_settings(config, optuna_sweep))
        except ConfigError as err:
            raise AbortRun(err) from err  # before any job starts (Hydra only warns of a callback's Exception)
        if optuna_sweep:
            from cifar import study

            try:
                sweeper.checked_sweep(config)
            except ConfigError:
                return  # no parent run or study: the sweeper reports the error (Hydra only warns of a callback's)
        try:
            experiment_id = use_experiment(usable_store(config.mlflow), config.mlflow.experiment)
        except UserError as err:
            raise AbortRun(err) from err  # before any job starts (Hydra only warns of a callback's Exception)
        made = _make_sweep_dir(config)  # before the study's storage, which it holds by default
        if optuna_sweep:
            try:
                study.sweep_storage(config.hydra)  # opened once per process: a URL that cannot be used fails here
            except ConfigError as err:
                _remove_if_empty(Path(config.hydra.sweep.dir), made)  # the sweep did not start
                raise AbortRun(err) from err  # not tried again by the sweeper (a server that does not answer: 8 s)
        client = MlflowClient()
        close_stale_runs(client, experiment_id)
        new_run = functools.partial(_new_parent_run, client, experiment_id, config)
        if optuna_sweep:
            run_id = study.shared_parent_run(config.hydra, new_run, functools.partial(_reuse_parent_run, client,
                                                                                      experiment_id))
        elif config.trainer.resume:
            try:
                parent = stopped_sweep_parent(client, experiment_id, config.hydra.sweep.dir)
                _refuse_running(parent, "the stopped sweep's MLflow parent run")
            except ConfigError as err:
                raise AbortRun(err) from err
            run_id = parent.info.run_id
            _take_up(client, run_id)
        else:
            run_id = new_run()
        self.parent_run_id = run_id
        sweep = {"parent_run_id": run_id, "swept_keys": swept_keys(config)}
        atomic_write_text(Path(config.hydra.sweep.dir) / SWEEP_FILE, json.dumps(sweep))
        view = ui.share_sweep_view(client, experiment_id, run_id, sweep["swept_keys"])
        log.info("MLflow parent run %s for this sweep; compare its jobs in the MLflow UI at %s", run_id,
                 ui.address(client.tracking_uri, view))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep on its parent run and end it; Hydra calls this after a failed sweep too.

        After Ctrl-C or SIGTERM, the parent and the jobs still running end KILLED; after an outage of the
        store, the parent alone, where the store answers. A sweep that was stopped sends each request once: where
        the store does not answer, the next run or sweep of the experiment here ends the parent KILLED.
        """
        from mlflow.tracking import MlflowClient

        run_id = self.parent_run_id
        if run_id is None:
            return  # the sweep was refused before it started
        stopped_by = sys.exc_info()[1]  # Hydra calls this in a finally
        client = MlflowClient()
        if store_outage(stopped_by):  # the store was waited for already (here or in a job): one try, no summary
            try_once(client.set_terminated, run_id, "KILLED")
            return
        if stopped_by is None:
            if not _summarise(client, run_id, config, interrupted=False):
                log.warning("MLflow parent run %s ended FAILED: none of the sweep's jobs logged a run under it. A job "
                            "reads the parent's id in %s and logs to the sweep's store: where jobs run elsewhere, they "
                            "need the sweep's directory at the same path, and the same MLflow store", run_id,
                            Path(config.hydra.sweep.dir) / SWEEP_FILE)
            return
        try:  # a request each, where MLflow's own retries would keep a stopped sweep minutes from ending
            with one_request_a_try():
                _summarise(client, run_id, config, interrupted=isinstance(stopped_by, KeyboardInterrupt))
        except Exception as err:  # stores fail with many error types (sqlalchemy, requests, OS)
            log.warning("MLflow parent run %s not summarised (%s: %s); the next run or sweep of its experiment here "
                        "ends it KILLED", run_id, type(err).__name__, first_line(err))


def _summarise(client: Any, run_id: str, config: DictConfig, interrupted: bool) -> int:
    """Log the sweep's summary on its parent run and end it: FINISHED where a job finished, KILLED after an
    interrupt (with the jobs still running), else FAILED. Returns how many job runs it has."""
    status = "FAILED"
    try:
        parent = client.get_run(run_id)
        children = sweep_jobs(client, parent)
        if interrupted:
            for child in children:
                if child.info.status == "RUNNING":  # a job in a worker process that was stopped with the sweep
                    client.set_terminated(child.info.run_id, "KILLED")
        best = _best_job(children)
        metrics = _log_jobs(client, run_id, children, best)
        if metrics["sweep/jobs_finished"]:
            status = "FINISHED"
        if config.mlflow.register_model and not interrupted:
            _register_best(client, parent, best, config.mlflow.model_name)
        if sweeper.is_optuna_sweep(config.hydra):
            _log_study(client, run_id, config.hydra, children)
    finally:
        client.set_terminated(run_id, "KILLED" if interrupted else status)
    return len(children)


def _store_settings(config: DictConfig, optuna_sweep: bool) -> dict[str, str]:
    """The sweep's store URLs, by the setting that gives each."""
    setting = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "mlflow.tracking_uri"
    stores = {setting: store_uri(config.mlflow)}
    if optuna_sweep and config.hydra.sweeper.storage:
        stores["hydra.sweeper.storage"] = config.hydra.sweeper.storage
    return stores


def _make_sweep_dir(config: DictConfig) -> Path | None:
    """Make a new sweep's dir before its parent run, which Hydra would fail on only after; a resumed
    sweep's dir exists, or the resume is refused without making it. Returns the topmost folder made
    (``multirun/<date>`` for the first sweep of a day), None where the dir was there."""
    if config.trainer.resume:
        return None
    sweep_dir = Path(config.hydra.sweep.dir).absolute()
    made = next((d for d in reversed([sweep_dir, *sweep_dir.parents]) if not d.exists()), None)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        unwritable = unwritable_output_dir(err)
        raise AbortRun(unwritable) from unwritable  # Hydra only warns of a callback's Exception
    return made


def _remove_if_empty(sweep_dir: Path, made: Path | None) -> None:
    """Remove the folders :func:`_make_sweep_dir` made, from ``sweep_dir`` up to ``made``, while empty."""
    if made is None:
        return
    for folder in [sweep_dir.absolute(), *sweep_dir.absolute().parents]:
        try:
            folder.rmdir()  # only an empty folder: whatever another process wrote there stays
        except OSError:
            return
        if folder == made:
            return


def _new_parent_run(client: Any, experiment_id: str, config: DictConfig) -> str:
    sweep_dir = Path(config.hydra.sweep.dir)
    study_tags = _study_tags(config.hydra)
    name = f"sweep {' '.join(sweep_overrides(config)) or study_tags.get(STUDY_NAME_TAG) or sweep_dir.name}"
    run = client.create_run(
        experiment_id,
        run_name=_truncate(name),
        tags={
            **study_tags,
            SWEEP_DIR_TAG: str(sweep_dir.resolve()),
            OWNER_TAG: owner.current(),
            "mlflow.note.content": without_passwords(f"python -m cifar.train -m {' '.join(sys.argv[1:])}".strip()),
            **git_state(),
        },
    )
    return run.info.run_id


def stopped_sweep_parent(client: Any, experiment_id: str, sweep_dir: str) -> Any:
    """The parent run of the sweep stopped in ``sweep_dir``, which a sweep with ``trainer.resume=true``
    continues; refused (ConfigError) where this MLflow store and experiment hold none."""
    stopped = read_sweep(sweep_dir)
    if stopped is None:
        raise ConfigError(
            f"trainer.resume=true but {sweep_dir} holds no stopped sweep (no {SWEEP_FILE}): set hydra.sweep.dir to "
            "the stopped sweep's dir (the line printed when it stopped gives it), or drop trainer.resume"
        )
    parent = _run_to_take_up(client, stopped["parent_run_id"], "the stopped sweep's MLflow parent run")
    if parent.info.experiment_id != experiment_id:
        name = client.get_experiment(parent.info.experiment_id).name
        raise ConfigError(
            f"trainer.resume=true but the stopped sweep's MLflow parent run {parent.info.run_id} is in "
            f"experiment {name!r}: resume with mlflow.experiment={name}"
        )
    return parent


def sweep_jobs(client: Any, parent: Any) -> list[Any]:
    """The runs of a sweep's jobs: the children of its parent run ``parent``."""
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


def stopped_job_run_id(parent: Any, output_dir: Path) -> str | None:
    """The run of the job in ``output_dir`` of the sweep with parent run ``parent``, where the job had
    started before the sweep was stopped (without saving an epoch: its last.pt holds the run id
    otherwise); None where it had not."""
    from mlflow.tracking import MlflowClient

    jobs = sweep_jobs(MlflowClient(), parent)
    return next((job.info.run_id for job in jobs if job.data.tags.get(OUTPUT_DIR_TAG) == str(output_dir)), None)


def _reuse_parent_run(client: Any, experiment_id: str, run_id: str) -> bool:
    """Take up a study's parent run again (RUNNING, owned by this process), if it is in this experiment."""
    run = existing_run(client, run_id)
    if run is None or run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return False  # another tracking store or experiment, or deleted
    _take_up(client, run_id)
    return True


def _take_up(client: Any, run_id: str) -> None:
    """Mark a stopped sweep's parent run RUNNING again, owned by this process."""
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, OWNER_TAG, owner.current())


def _log_jobs(client: Any, parent_id: str, children: list[Any], best: Any | None) -> dict[str, float]:
    """The jobs' counts by outcome and the best job, on the parent run; returns the counts."""
    statuses = [child.info.status for child in children]
    metrics = {
        "sweep/jobs": len(children),
        "sweep/jobs_finished": statuses.count("FINISHED"),
        "sweep/jobs_failed": statuses.count("FAILED"),
        "sweep/jobs_pruned": sum(c.data.tags.get(PRUNED_TAG) == "true" for c in children),
    }
    if best is not None:
        metrics[BEST_VAL_ACC] = best.data.metrics[BEST_VAL_ACC]
        client.set_tag(parent_id, BEST_RUN_TAG, best.info.run_id)
        client.set_tag(parent_id, "best_run_name", best.info.run_name)
    for key, value in metrics.items():
        client.log_metric(parent_id, key, value)
    return metrics


def _best_job(children: list[Any]) -> Any | None:
    """The job with the best val/best_acc, if any job scored."""
    scored = [c for c in children if BEST_VAL_ACC in c.data.metrics]
    return max(scored, key=lambda c: c.data.metrics[BEST_VAL_ACC]) if scored else None


def _register_best(client: Any, parent: Any, best: Any | None, name: str) -> None:
    """Register the model of the sweep's best job under ``name``, unless another worker of the
    study registered that job's model already."""
    from cifar import registry

    if best is None:
        log.warning("No model to register: no job of the sweep has a %s to pick the best by (none finished, or "
                    "data.val_size=0: register the chosen job's with mlflow.register_model('runs:/<run id>/model', "
                    "NAME))", BEST_VAL_ACC)
        return
    if parent.data.tags.get(REGISTERED_RUN_TAG) == best.info.run_id:
        return
    model_uri = registry.logged_model_uri(client, best.info.experiment_id, best.info.run_id)
    if not model_uri:
        log.warning("No model to register: the sweep's best job logged none")
        return
    version = registry.register(model_uri, name)
    client.set_tag(parent.info.run_id, "registered_model", f"models:/{name}/{version}")
    client.set_tag(parent.info.run_id, REGISTERED_RUN_TAG, best.info.run_id)


def _study_tags(hydra_cfg: DictConfig) -> dict[str, str]:
    """The study name and storage URL of an Optuna sweep (none for other sweeps)."""
    if not sweeper.is_optuna_sweep(hydra_cfg):
        return {}
    return {
        STUDY_NAME_TAG: sweeper.study_name(hydra_cfg.sweeper.study_name, hydra_cfg.sweep.dir),
        STUDY_STORAGE_TAG: without_passwords(sweeper.storage_url(hydra_cfg.sweeper.storage, hydra_cfg.sweep.dir)),
    }


def _log_study(client: Any, parent_id: str, hydra_cfg: DictConfig, children: list[Any]) -> None:
    """Trial states on the trials' runs (a run left RUNNING by a dead worker ends KILLED); the study's
    best trial and its plots on the parent run."""
    from cifar import plots, study

    try:
        optuna_study, _ = study.load_sweep_study(hydra_cfg)
    except KeyError:  # optuna.load_study: the sweep failed before it created its study
        log.warning("Study %s was not created: no study summary on the sweep's parent run",
                    sweeper.study_name(hydra_cfg.sweeper.study_name, hydra_cfg.sweep.dir))
        return
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
    for child in children:
        number = child.data.tags.get(TRIAL_NUMBER_TAG)
        trial = trials.get(int(number)) if number is not None else None
        if trial is None:
            continue
        client.set_tag(child.info.run_id, TRIAL_STATE_TAG, trial.state.name)
        if child.info.status == "RUNNING" and trial.user_attrs.get(study.KILLED_ATTR):
            client.set_terminated(child.info.run_id, "KILLED")  # its sweeper died elsewhere: nothing else ends it
    summary = study.summary(optuna_study)
    for state, count in summary["trials"].items():
        client.log_metric(parent_id, f"study/trials_{state}", count)
    if "best_value" in summary:
        client.log_metric(parent_id, "study/best_value", summary["best_value"])
        client.set_tag(parent_id, "optuna.best_trial", str(summary["best_trial"]))
        _tag_best_params(client, parent_id, summary["best_params"])
    for filename, figure in plots.study_figures(optuna_study).items():
        client.log_figure(parent_id, figure, f"optuna/{filename}")
        plots.close(figure)


def _tag_best_params(client: Any, parent_id: str, best_params: dict[str, Any]) -> None:
    """The study's best parameters as tags ``best.<key>`` of the parent run: tags, not params, since a
    resumed study, or another worker's, may find a better trial, and MLflow refuses a changed param."""
    tags = {f"best.{name}": str(value) for name, value in best_params.items()}
    for stale in client.get_run(parent_id).data.tags.keys() - tags.keys():
        if stale.startswith("best."):  # a key the new best trial did not sample
            client.delete_tag(parent_id, stale)
    for key, value in tags.items():
        client.set_tag(parent_id, key, value)


def _truncate(text: str, limit: int = 250) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
