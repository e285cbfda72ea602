"""The sweep's MLflow parent run: opened by :class:`SweepCallback` in the process that starts the sweep,
before the first job, and summarised and ended after the last.

Its id and the swept keys are written to ``<sweep dir>/mlflow_sweep.json`` so that jobs find them from
any process or machine that sees the sweep directory (the joblib and cluster launchers run jobs
elsewhere). An Optuna sweep's parent run is its study's (:func:`cifar.study.shared_parent_run`):
the workers that share a study, and the sweeps that resume it, log under one parent.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar import continuation, launchers, owner, parallel, report, sweeper, tracking, ui
from cifar.config import check_working_dir
from cifar.credentials import without_passwords
from cifar.errors import AbortRun, ConfigError, UserError, first_line, unwritable_output_dir
from cifar.files import atomic_write_text, release_claim, remove_made
from cifar.outages import one_request_a_try, store_outage, try_once
from cifar.output_dirs import claim_named_dir, make_output_dir
from cifar.tracking import (
    BEST_RUN_TAG, BEST_VAL_ACC, FIXED_OVERRIDES_TAG, OUTPUT_DIR_TAG, OWNER_TAG, PRUNED_TAG, REGISTERED_RUN_TAG,
    STUDY_NAME_TAG, STUDY_STORAGE_TAG, SWEEP_DIR_TAG, SWEEP_FILE, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG,
)

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Opens the multirun's parent run before the first job and closes it with a summary."""

    parent_run_id: str | None = None  # set once the sweep's parent run is open
    claimed: Path | None = None  # a grid sweep's hydra.sweep.dir, where it is named on the command line
    report_options: list[str] = []  # those with which cifar.report reads the sweep's store

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        optuna_sweep = sweeper.is_optuna_sweep(config.hydra)
        try:  # before any job, run, study or dir (Hydra only warns of a callback's Exception)
            check_working_dir(config.hydra)
            parallel.check_launcher(config.hydra)
            launchers.check_cluster(config.hydra)
            distributions, jobs = _checked_jobs(config, optuna_sweep)
            sweeper.check_machine(jobs)
            if not optuna_sweep:  # an Optuna sweep's workers may share its dir (their job dirs: trial numbers)
                self.claimed = claim_named_dir(config, "sweep")
            training_images: dict[tuple[str, str, bool], int] = {}
            sweeper.check_data(jobs, training_images, decode=False)  # what the data's caches say (cheap)
            # the stores from here: finding MLflow's default imports MLflow (2 s), which a refused config need not
            launchers.check_stores_reach_jobs(config.hydra, _store_settings(config, optuna_sweep))
            store = tracking.usable_store(config.mlflow)
            self.report_options = _report_options(store)
            sweeper.check_data(jobs, training_images)  # the last check: it may download and decode the data
            experiment_id = tracking.use_experiment(store, config.mlflow.experiment)
        except UserError as err:
            raise AbortRun(err) from err
        made = _make_sweep_dir(config)  # before the study's storage, which it holds by default
        if optuna_sweep:
            from cifar import study

            settings = study.trial_settings(jobs[0], distributions)
            try:
                study.sweep_storage(config.hydra)  # opened once per process: a URL that cannot be used fails here
                study.check_study_fits(config.hydra, distributions, settings)
            except ConfigError as err:
                remove_made(Path(config.hydra.sweep.dir), made)  # the sweep did not start
                raise AbortRun(err) from err  # not tried again by the sweeper (a server that does not answer: 8 s)
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        tracking.close_stale_runs(client, experiment_id)
        new_run = functools.partial(_new_parent_run, client, experiment_id, config)
        if optuna_sweep:
            run_id = study.shared_parent_run(config.hydra, new_run, functools.partial(_reuse_parent_run, client,
                                                                                      experiment_id, config))
            study.record_trial_settings(config.hydra, settings)
        elif config.trainer.resume:
            try:
                parent = stopped_sweep_parent(client, experiment_id, config.hydra.sweep.dir)
                tracking.refuse_running(parent, "the stopped sweep's MLflow parent run")
                check_jobs_keep_their_dirs(config, jobs)
            except ConfigError as err:
                raise AbortRun(err) from err
            run_id = parent.info.run_id
            _take_up(client, run_id, config)
        else:
            try:
                _check_an_earlier_sweep(client, config.hydra.sweep.dir)
            except ConfigError as err:
                raise AbortRun(err) from err
            run_id = new_run()
        self.parent_run_id = run_id
        sweep = {"parent_run_id": run_id, "swept_keys": tracking.swept_keys(config),
                 "grid_jobs": None if optuna_sweep else len(jobs) or None,  # for their share of the cores
                 "tracking_uri": tracking.portable_store(store)}  # for cifar.report and cifar.predict, from anywhere
        atomic_write_text(Path(config.hydra.sweep.dir) / SWEEP_FILE, json.dumps(sweep))
        view = ui.share_sweep_view(client, experiment_id, run_id, sweep["swept_keys"])
        log.info("MLflow parent run %s for this sweep; compare its jobs in the MLflow UI at %s", run_id,
                 ui.address(client.tracking_uri, view))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """End the sweep's parent run (:meth:`_end_parent_run`), then release its dir; Hydra calls this after a
        failed or refused sweep too."""
        try:
            self._end_parent_run(config)
        finally:
            if self.claimed is not None:
                release_claim(self.claimed)

    def _end_parent_run(self, config: DictConfig) -> None:
        """Summarise the sweep on its parent run and end it.

        After Ctrl-C or SIGTERM, or where the launcher lost a job's process, the parent ends KILLED, and the
        jobs' runs left RUNNING too (:func:`_summarise`); after an outage of the store, the parent alone, where
        the store answers. A sweep that was stopped sends each request once: where the store does not answer,
        the next run or sweep of the experiment here ends the parent KILLED.
        """
        run_id = self.parent_run_id
        if run_id is None:
            return  # the sweep was refused before it started
        from mlflow.tracking import MlflowClient

        stopped_by = sys.exc_info()[1]  # Hydra calls this in a finally
        client = MlflowClient()
        if store_outage(stopped_by):  # the store was waited for already (here or in a job): one try, no summary
            try_once(client.set_terminated, run_id, "KILLED")
            return
        if stopped_by is None:
            parent, children, best = _summarise(client, run_id, config, stopped_by=None)
            if children:
                log.info(_closing_line(parent, children, best, [*self.report_options, "--sweep", run_id]))
            else:
                log.warning("MLflow parent run %s ended FAILED: none of the sweep's jobs logged a run under it. A job "
                            "reads the parent's id in %s and logs to the sweep's store: where jobs run elsewhere, they "
                            "need the sweep's directory at the same path, and the same MLflow store", run_id,
                            Path(config.hydra.sweep.dir) / SWEEP_FILE)
            return
        try:  # a request each, where MLflow's own retries would keep a stopped sweep minutes from ending
            with one_request_a_try():
                _summarise(client, run_id, config, stopped_by)
        except Exception as err:  # stores fail with many error types (sqlalchemy, requests, OS)
            log.warning("MLflow parent run %s not summarised (%s: %s); the next run or sweep of its experiment here "
                        "ends it KILLED", run_id, type(err).__name__, first_line(err))


def _checked_jobs(config: DictConfig, optuna_sweep: bool) -> tuple[dict[str, Any], list[DictConfig]]:
    """An Optuna search's distributions (a grid has none) and the configs of the sweep's jobs, checked: a grid's,
    or a few trials of the search's space; for another sweeper, neither."""
    loader = GlobalHydra.instance().config_loader()
    if optuna_sweep:
        from cifar.sweeper_impl import check_search_space  # imports Optuna

        sweeper.checked_sweep(config)
        return check_search_space(config, loader)
    return {}, sweeper.check_grid(config, loader) if sweeper.is_grid_sweep(config.hydra) else []


def _summarise(client: Any, run_id: str, config: DictConfig,
               stopped_by: BaseException | None) -> tuple[Any, list[Any], Any | None]:
    """Log the sweep's summary on its parent run and end it: FINISHED where a job finished, KILLED where the sweep
    was stopped (``stopped_by`` an interrupt, or a job's process that the launcher lost), else FAILED. Returns the
    parent run, the jobs' runs and the best job's (None where none scored). The jobs' runs left RUNNING end KILLED:
    after an interrupt, all of them (the jobs of worker processes stopped with the sweep), else those whose process
    is gone from this machine, and that of a submitit job that ended without a result, wherever it ran."""
    interrupted = isinstance(stopped_by, KeyboardInterrupt)
    stopped = interrupted or launchers.lost_job(stopped_by) is not None
    lost_submitit_job = launchers.lost_submitit_job_id(stopped_by)
    status = "FAILED"
    try:
        parent = client.get_run(run_id)
        children = tracking.sweep_jobs(client, parent)
        lost = lost_submitit_job is not None
        left = [child for child in children if child.info.status == "RUNNING" and (
            interrupted or tracking.owner_is_gone(child)
            or (lost and child.data.tags.get(launchers.SUBMITIT_JOB_TAG) == lost_submitit_job))]
        for child in left:
            client.set_terminated(child.info.run_id, "KILLED")
        if left:
            children = tracking.sweep_jobs(client, parent)  # as they are now
        optuna_study = _sweep_study(config.hydra) if sweeper.is_optuna_sweep(config.hydra) else None
        best = _best_job(children, optuna_study)
        metrics = _log_jobs(client, run_id, children, best)
        if metrics["sweep/jobs_finished"]:
            status = "FINISHED"
        if config.mlflow.register_model and not stopped:
            _register_best(client, parent, best, config.mlflow.model_name)
        if optuna_study is not None:
            _log_study(client, run_id, optuna_study, children)
        _log_report(client, parent, best, optuna_study)
    finally:
        client.set_terminated(run_id, "KILLED" if stopped else status)
    return parent, children, best


_STATE_ORDER = ("finished", "pruned", "failed", "killed", "running")  # report.run_state's, done first


def _closing_line(parent: Any, children: list[Any], best: Any | None, report_options: list[str]) -> str:
    """What the sweep of parent run ``parent`` came to, for the console: its jobs by state as the report gives them,
    the best job, the best configuration by its mean over seeds where configurations finished more than once, and
    the report that tables them all."""
    states = collections.Counter(report.run_state(child) for child in children)
    order = sorted(states, key=lambda state: _STATE_ORDER.index(state) if state in _STATE_ORDER else len(_STATE_ORDER))
    outcomes = ", ".join(f"{states[state]} {state}" for state in order)
    line = f"Sweep ended: {len(children)} job{'s' * (len(children) != 1)} ({outcomes})"
    if best is not None:
        line += (f"; best {BEST_VAL_ACC} {best.data.metrics[BEST_VAL_ACC]:.4f}: {best.info.run_name} "
                 f"(MLflow run {best.info.run_id})")
    if repeated := report.repeated_configs([report.row(child, sweeps={parent.info.run_id: parent})
                                            for child in children]):
        top = repeated[0]
        line += f"; best mean {BEST_VAL_ACC} {top.mean_val_acc:.4f} over {top.runs} runs: {top.name}"
    return f"{line}. All of them: {shlex.join(['python', '-m', 'cifar.report', *report_options])}"


def _report_options(store: str) -> list[str]:
    """The options with which ``cifar.report`` reads ``store``, where its default would not (a sweep chosen by its
    id is read in its own experiment): called before the sweep's first ``mlflow.set_tracking_uri``, which sets
    MLFLOW_TRACKING_URI in this process (the report's default store is that variable's, else MLflow's default)."""
    import mlflow

    return [] if store == mlflow.get_tracking_uri() else ["--tracking-uri", without_passwords(store)]


def _store_settings(config: DictConfig, optuna_sweep: bool) -> dict[str, str]:
    """The sweep's store URLs, by the setting that gives each."""
    stores = {tracking.store_setting(): tracking.store_uri(config.mlflow)}
    if optuna_sweep and config.hydra.sweeper.storage:
        stores["hydra.sweeper.storage"] = config.hydra.sweeper.storage
    return stores


def _make_sweep_dir(config: DictConfig) -> Path | None:
    """Make a new sweep's dir before its parent run, which Hydra would fail on only after: a dir of its own
    where it is named by the time (:func:`cifar.output_dirs.make_output_dir`). A resumed sweep's dir exists,
    or the resume is refused without making it. Returns the topmost folder made (``multirun/<date>`` for
    the first sweep of a day), None where the dir was there."""
    if config.trainer.resume:
        return None
    try:
        return make_output_dir(config, "sweep")
    except OSError as err:
        unwritable = unwritable_output_dir(err)
        raise AbortRun(unwritable) from unwritable  # Hydra only warns of a callback's Exception


def _check_an_earlier_sweep(client: Any, sweep_dir: str) -> None:
    """Refuse a new grid sweep in ``sweep_dir`` (a dir named on the command line, run again) while the sweep there
    still runs (its parent run RUNNING, in a process that is not gone): each would write over the other's job dirs,
    and that sweep's jobs that started after this one logged under this one's parent run. Else, where a sweep ran
    there, say that this one writes over its jobs' dirs and checkpoints, and how to keep them or continue that
    sweep; an Optuna sweep there continues its study."""
    earlier = tracking.read_sweep(sweep_dir)
    if earlier is None:
        return
    parent = tracking.existing_run(client, earlier["parent_run_id"])  # None where it logged to another store
    if parent is not None and tracking.still_running(parent):
        raise tracking.dir_in_use("hydra.sweep.dir", sweep_dir, "sweep", parent, "MLflow parent run")
    log.warning("hydra.sweep.dir=%s holds the sweep of MLflow parent run %s: this sweep's jobs write over its "
                "jobs' dirs and checkpoints (their MLflow runs and logged models stay). To keep them, stop this "
                "sweep and give it another hydra.sweep.dir; where that sweep was stopped, continue it with "
                "trainer.resume=true", sweep_dir, earlier["parent_run_id"])


def _new_parent_run(client: Any, experiment_id: str, config: DictConfig) -> str:
    sweep_dir = Path(config.hydra.sweep.dir)
    study_tags = _study_tags(config.hydra)
    given = None if tracking.names_each_run(config.mlflow) else config.mlflow.run_name  # else it names the jobs
    # nothing swept on the command line (an Optuna search space): the study's name first
    study = [] if tracking.sweep_overrides(config) else [study_tags.get(STUDY_NAME_TAG, "")]
    name = given or f"sweep {' '.join(filter(None, study + tracking.sweep_naming_overrides(config))) or sweep_dir.name}"
    command = without_passwords(continuation.train_command(sys.argv[1:]))  # as typed: -m included
    run = client.create_run(
        experiment_id,
        run_name=tracking.truncate(name),
        tags={
            **tracking.user_tags(config.mlflow),
            **tracking.description(config.mlflow, command),
            **study_tags,
            SWEEP_DIR_TAG: str(sweep_dir.resolve()),
            FIXED_OVERRIDES_TAG: json.dumps(tracking.fixed_overrides(config)),
            OWNER_TAG: owner.current(),
            **tracking.git_state(),
        },
    )
    return run.info.run_id


def stopped_sweep_parent(client: Any, experiment_id: str, sweep_dir: str) -> Any:
    """The parent run of the sweep stopped in ``sweep_dir``, which a sweep with ``trainer.resume=true``
    continues; refused (ConfigError) where this MLflow store and experiment hold none."""
    stopped = tracking.read_sweep(sweep_dir)
    if stopped is None:
        raise ConfigError(
            f"trainer.resume=true but {sweep_dir} holds no stopped sweep (no {SWEEP_FILE}): set hydra.sweep.dir to "
            "the stopped sweep's dir (the line printed when it stopped gives it), or drop trainer.resume"
        )
    parent = tracking.run_to_take_up(client, stopped["parent_run_id"], "the stopped sweep's MLflow parent run")
    if parent.info.experiment_id != experiment_id:
        name = client.get_experiment(parent.info.experiment_id).name
        raise ConfigError(
            f"trainer.resume=true but the stopped sweep's MLflow parent run {parent.info.run_id} is in "
            f"experiment {name!r}: resume with mlflow.experiment={name}"
        )
    return parent


def check_jobs_keep_their_dirs(config: DictConfig, jobs: list[DictConfig]) -> None:
    """Refuse (ConfigError) a resumed grid sweep whose jobs would continue the dirs of other jobs of the stopped
    sweep. A job's dir is named by its number in the grid (Hydra's default ``hydra.sweep.subdir``), so a value put
    before the stopped sweep's shifts the jobs after it: each would be refused on its own after reading the data, its
    dir's config written over, and the job whose dir it had taken run again from the start in another dir."""
    if OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") != JOB_NUMBER_SUBDIR:
        return
    swept = tracking.swept_keys(config)
    for number, job in enumerate(jobs):
        saved = Path(config.hydra.sweep.dir) / str(number) / ".hydra" / "config.yaml"
        if not saved.exists():  # a job that had not started, or new to the grid
            continue
        ran = OmegaConf.load(saved)
        if any(_selected(ran, key) != _selected(job, key) for key in swept):
            raise ConfigError(
                f"trainer.resume=true but the job {_swept_values(job, swept)} would continue {saved.parent.parent}, "
                f"where the stopped sweep ran {_swept_values(ran, swept)}: resume with the stopped sweep's grid, its "
                f"values in their order (values added after those of its first key run in new jobs), or drop "
                f"trainer.resume to start a new sweep")


JOB_NUMBER_SUBDIR = "${hydra.job.num}"  # Hydra's default hydra.sweep.subdir


def _selected(config: DictConfig, key: str) -> Any:
    """A job's value at ``key``; None where it has none, or one that does not resolve here."""
    return OmegaConf.select(config, key, throw_on_resolution_failure=False)


def _swept_values(config: DictConfig, swept: list[str]) -> str:
    """A job's swept values as overrides: a group's by its option's name (``model=resnet9``)."""
    values = {key: _selected(config, key) for key in swept}
    return " ".join(f"{key}={value.name if isinstance(value, DictConfig) else value}" for key, value in values.items())


def stopped_job_run_id(parent: Any, output_dir: Path) -> str | None:
    """The run of the job in ``output_dir`` of the sweep with parent run ``parent``, where the job had
    started before the sweep was stopped (without saving an epoch: its last.pt holds the run id
    otherwise); None where it had not."""
    from mlflow.tracking import MlflowClient

    jobs = tracking.sweep_jobs(MlflowClient(), parent)
    return next((job.info.run_id for job in jobs if job.data.tags.get(OUTPUT_DIR_TAG) == str(output_dir)), None)


def _reuse_parent_run(client: Any, experiment_id: str, config: DictConfig, run_id: str) -> bool:
    """Take up a study's parent run again (RUNNING, owned by this process), if it is in this experiment."""
    run = tracking.existing_run(client, run_id)
    if run is None or run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return False  # another tracking store or experiment, or deleted
    _take_up(client, run_id, config)
    return True


def _take_up(client: Any, run_id: str, config: DictConfig) -> None:
    """Mark a stopped sweep's parent run RUNNING again, owned by this process, with the tags of ``mlflow.tags``
    given now (its name and description stay the first command's)."""
    client.update_run(run_id, status="RUNNING")
    for key, value in {**tracking.user_tags(config.mlflow), OWNER_TAG: owner.current()}.items():
        client.set_tag(run_id, key, value)


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


def _log_report(client: Any, parent: Any, best: Any | None, optuna_study: Any | None) -> None:
    """The sweep's report, as ``cifar.report --sweep`` gives it, on its parent run: ``report/runs.md``, and
    ``report/runs.csv``, which the MLflow UI shows as a table."""
    jobs = tracking.sweep_jobs(client, parent)  # as they ended, the trials of a worker that died included
    if not jobs:
        return
    study = None if optuna_study is None else report.study_line(optuna_study, parent.data.tags[STUDY_STORAGE_TAG])
    summary = report.of_sweep(client, parent, jobs, best.info.run_id if best else None, study)
    client.log_text(parent.info.run_id, report.to_markdown(summary), "report/runs.md")
    client.log_text(parent.info.run_id, report.to_csv(summary), "report/runs.csv")


def _best_job(children: list[Any], optuna_study: Any | None = None) -> Any | None:
    """The job with the best val/best_acc, the first started of those that tie (None if no job scored). In an
    Optuna sweep, the job of the study's best trial, which the sweep's "Best parameters" line names (None before a
    trial completed): a pruned trial may have scored more before it was stopped, and Optuna breaks ties in its own
    order."""
    if optuna_study is not None:
        from cifar import study

        best_trial = study.best_trial(optuna_study)
        if best_trial is None:
            return None
        return next((c for c in children if c.data.tags.get(TRIAL_NUMBER_TAG) == str(best_trial.number)), None)
    scored = [c for c in children if BEST_VAL_ACC in c.data.metrics]
    return min(scored, key=lambda c: (-c.data.metrics[BEST_VAL_ACC], c.info.start_time)) if scored else None


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


def _sweep_study(hydra_cfg: DictConfig) -> Any | None:
    """The Optuna sweep's study; None, said in a warning, where the sweep failed before it created it."""
    from cifar import study

    try:
        return study.load_sweep_study(hydra_cfg)[0]
    except KeyError:  # optuna.load_study
        log.warning("Study %s was not created: no study summary on the sweep's parent run",
                    sweeper.study_name(hydra_cfg.sweeper.study_name, hydra_cfg.sweep.dir))
        return None


def _log_study(client: Any, parent_id: str, optuna_study: Any, children: list[Any]) -> None:
    """Trial states on the trials' runs (a run left RUNNING by a dead worker ends KILLED); the study's
    best trial and its plots on the parent run."""
    from cifar import plots, study

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
