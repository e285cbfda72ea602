"""The training task: config in, best validation accuracy out, everything tracked in MLflow."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cifar import checkpoint, dvc_exp, inference, launchers, parallel, plots, registry, sweep_run, tracking
from cifar.batches import Augmenter, Normalizer, steps_per_epoch
from cifar.credentials import without_passwords
from cifar.data import CLASSES, load_cifar10
from cifar.device import Runtime, default_eval_batch_size, make_runtime, torch_default_threads
from cifar.diagnostics import Diagnostics
from cifar.models import build_model, check_fits, summarize, whiten_first_conv
from cifar.optim import build_optimizer, build_scheduler
from cifar.engine import TTA, Evaluation
from cifar.errors import CheckpointError, DivergedError
from cifar.files import BEST, LAST, atomic_write_text
from cifar.lookahead import Lookahead
from cifar.outages import Retrying
from cifar.study import SweepTrial
from cifar.trainer import EpochMetrics, FitResult, Trainer, make_splits
from cifar.versioning import dvc_data_hash, file_md5

log = logging.getLogger("cifar.train")

PRUNED = "pruned"  # the stop reason of a trial that its pruner stopped
METRICS_FILE = "metrics.json"  # in each run's output dir: DVC's metrics
EPOCHS_FILE = "epochs.csv"  # in each run's output dir: DVC's plots
UNCOMMITTED_DIFF = "code/uncommitted.diff"  # artifact of a run whose git.dirty is true: git apply it to git.commit
MLFLOW_RUN_ID = "mlflow_run_id"  # in each checkpoint: a resumed run logs into the same MLflow run
WHITENING_IMAGES = 2000  # trainer.whiten's patches: 1.8 million 3x3 patches, an estimate that more images barely change


def run(cfg: DictConfig) -> float | None:
    """Train, validate and test one model; return its best validation accuracy (None with
    ``data.val_size=0``: then it trains on every training image and tests its last epoch's weights).

    As a trial of an Optuna sweep, the job reports each epoch's validation accuracy to its trial
    and stops when the pruner says so; a trial whose loss diverges is recorded as pruned (its
    MLflow run as failed) and returns NaN, so that the sweep goes on.
    """
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not multirun and not cfg.trainer.resume and not dvc_exp.runs_a_stage():  # a stage's dir: its outputs
        _warn_of_an_earlier_run(Path(hydra_cfg.runtime.output_dir))
    retrying = Retrying(cfg.mlflow.store_wait_s, without_passwords(tracking.store_uri(cfg.mlflow)))
    # A server that does not answer fails before the data is decoded; a sweep's store answered when the sweep
    # started, so that one that does not answer its job (here or at any later call) is down, and waited for.
    store = retrying(tracking.usable_store, cfg.mlflow) if multirun else tracking.usable_store(cfg.mlflow)
    stopped_parent = None  # the parent run of the stopped sweep that this job continues
    if multirun and cfg.trainer.resume:  # the sweep's start refused the resume already if this fails
        experiment_id = tracking.use_experiment(store, cfg.mlflow.experiment, retrying)
        stopped_parent = sweep_run.stopped_sweep_parent(mlflow.MlflowClient(), experiment_id, hydra_cfg.sweep.dir)
    sweep = tracking.read_sweep(hydra_cfg.sweep.dir) if multirun else None
    parallel.check_threads(cfg.trainer.threads)  # where the job runs
    threads = cfg.trainer.threads or parallel.threads_per_job(hydra_cfg, torch_default_threads(),
                                                              sweep.get("grid_jobs") if sweep else None)
    runtime = make_runtime(
        cfg.trainer.device, cfg.trainer.amp, cfg.trainer.channels_last, cfg.trainer.compile, threads,
        parallel.job_slot(hydra_cfg),
    )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(runtime.device)
    check_fits(model, cfg)
    data = load_cifar10(to_absolute_path(cfg.data.path), to_absolute_path(cfg.data.cache_dir), cfg.data.download)
    augment = Augmenter(**cfg.data.augment, cutout_fill=data.mean)
    splits = make_splits(data, cfg.data, cfg.seed, augment, runtime.device)

    normalize = Normalizer.from_stats(data.mean, data.std, runtime.device, runtime.channels_last)
    if cfg.trainer.whiten:
        whiten_first_conv(model, normalize(splits.train_images(augment.padding, WHITENING_IMAGES)))
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    summary = summarize(model)
    model_info = {"model.parameters": summary.parameters, "model.flops_per_image": summary.flops_per_image}
    if runtime.compile:
        model.compile()
    optimizer = build_optimizer(cfg.optimizer, model, runtime.device)
    steps = steps_per_epoch(splits.n_train, cfg.data.batch_size)
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps, cfg.trainer.epochs)

    # a resumed sweep's job configured MLflow before any work, and its stopped sweep is in this experiment
    experiment_id = (stopped_parent.info.experiment_id if stopped_parent
                     else tracking.use_experiment(store, cfg.mlflow.experiment, retrying if multirun else None))
    if not multirun:  # a sweep does this once, when it starts
        tracking.close_stale_runs(mlflow.MlflowClient(), experiment_id)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    log.info(
        "%s on %s (amp=%s, channels_last=%s): %d train / %d val / %d test images; %s parameters, %s FLOPs per image",
        cfg.model.name, runtime.device, runtime.amp_name, runtime.channels_last, splits.n_train,
        len(splits.val_labels), len(splits.test_labels),
        f"{model_info['model.parameters']:,}", f"{model_info['model.flops_per_image']:,}",
    )
    name = _run_name(cfg, hydra_cfg, multirun, sweep)
    trial = SweepTrial.of_job(hydra_cfg)
    tags = {**tracking.user_tags(cfg.mlflow), **tracking.description(cfg.mlflow),
            **_run_tags(cfg, data.content_hash, runtime, output_dir, trial)}
    params = {key: value for key, value in {**tracking.flatten(cfg), **tracking.preset_choices(hydra_cfg), **model_info}
              .items() if tracking.is_param(key)}
    resume_from = _last_checkpoint(output_dir, stopped_parent) if cfg.trainer.resume else None
    run_id = _run_to_continue(resume_from, output_dir, stopped_parent) if cfg.trainer.resume else None
    if run_id is not None:
        interrupted = tracking.run_to_resume(run_id, params)
        if interrupted.info.status == "FINISHED":
            return _already_finished(interrupted)
    tta = TTA(cfg.trainer.tta_flip, cfg.trainer.tta_translate)
    try:
        with tracking.job_run(name, sweep and sweep["parent_run_id"], tags, retrying, run_id=run_id) as run:
            dataset = tracking.dataset_input(cfg.data.name, to_absolute_path(cfg.data.path), data.content_hash)
            retrying(_log_run_inputs, params, dataset, output_dir / ".hydra", data.stats, summary.table)
            trainer = Trainer(
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing),
                splits=splits,
                normalize=normalize,
                augment=augment,
                runtime=runtime,
                batch_size=cfg.data.batch_size,
                eval_batch_size=cfg.data.eval_batch_size or default_eval_batch_size(runtime.device),
                generator=torch.Generator(runtime.device).manual_seed(cfg.seed),
                checkpoint_dir=output_dir,
                show_progress=_show_progress(cfg.trainer.progress, multirun),
                tta=tta,
                tta_in_validation=cfg.trainer.tta_in_validation,
                ema=_ema(model, cfg.trainer.ema_decay),
                lookahead=_lookahead(model, cfg.trainer, steps * cfg.trainer.epochs),
                whiten_bias_epochs=cfg.trainer.whiten_bias_epochs,
                max_grad_norm=cfg.trainer.grad_clip_norm,
                checkpoint_every=cfg.trainer.checkpoint_every,
                inference_spec=inference.spec(cfg.model, data.mean, data.std, tta),
                checkpoint_extra={MLFLOW_RUN_ID: run.info.run_id},
            )
            diagnostics = Diagnostics(cfg.diagnostics, splits.val_images, splits.val_labels, retrying)
            result = _fit(trainer, cfg.trainer, trial, diagnostics, retrying, resume_from)
            if result.stop_reason == PRUNED:
                _record_results(output_dir, result, None, None, cfg.mlflow.log_plots, retrying)
                _log_run_seconds(trainer, result, retrying)
                log.info("Trial %d pruned after epoch %d (val/acc %.4f); MLflow run %s",
                         trial.number, len(result.history), result.history[-1].val.acc, run.info.run_id)
                return result.best_val_acc
            test = trainer.test_best()
            _record_results(output_dir, result, test, splits.test_labels.cpu().numpy(), cfg.mlflow.log_plots, retrying)
            if cfg.mlflow.log_model:  # a sweep registers its best job's model when it ends
                registered_name = cfg.mlflow.model_name if cfg.mlflow.register_model and not multirun else None
                retrying(registry.log_model, output_dir / BEST, data.test_images, registered_name)
            _log_run_seconds(trainer, result, retrying)
            scored = ("no validation set; last epoch" if result.best_val_acc is None
                      else f"best val/acc {result.best_val_acc:.4f} at epoch")
            log.info("%s %d: test/acc %.4f (loss %.4f); MLflow run %s", scored, result.best_epoch, test.acc, test.loss,
                     run.info.run_id)
    except DivergedError as err:
        if trial is None:
            raise
        log.warning("Trial %d diverged (%s): recorded as pruned in study %s; the sweep goes on",
                    trial.number, err, trial.study_name)
        return math.nan
    return result.best_val_acc


def _run_name(cfg: DictConfig, hydra_cfg: DictConfig, multirun: bool, sweep: dict | None) -> str:
    """The MLflow run's name: ``mlflow.run_name``, else a DVC experiment's name (its overrides are in its
    params.yaml, not on the command line), else the overrides that change what it trains. A job of a sweep is named
    by its swept overrides (``sweep``'s), or by a ``mlflow.run_name`` swept or with an interpolation, resolved with
    its values; a plain one names the sweep's parent run."""
    swept = sweep["swept_keys"] if sweep else None
    names_the_job = not multirun or tracking.names_each_run(cfg.mlflow) or "mlflow.run_name" in (swept or ())
    if cfg.mlflow.run_name and names_the_job:
        return tracking.truncate(cfg.mlflow.run_name)
    if multirun:
        return tracking.run_name(list(hydra_cfg.overrides.task), swept)
    return dvc_exp.experiment_name() or tracking.run_name(list(hydra_cfg.overrides.task))


def _run_tags(
    cfg: DictConfig, content_hash: str, runtime: Runtime, output_dir: Path, trial: SweepTrial | None
) -> dict[str, str]:
    """What ties a run to its code, data, machine and (in an Optuna sweep) trial."""
    tags = {
        **tracking.git_state(),
        tracking.DATA_HASH_TAG: content_hash,
        "device": str(runtime.device),
        "amp": str(runtime.amp).lower(),
        **({"amp.dtype": str(runtime.amp_dtype).removeprefix("torch.")} if runtime.amp else {}),
        "compile": str(runtime.compile).lower(),
        "torch.version": torch.__version__,
        "torch.threads": str(torch.get_num_threads()),
        tracking.OUTPUT_DIR_TAG: str(dvc_exp.in_repo(output_dir).resolve()),
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs a scheduler gave this job
        tags["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    if (job_id := launchers.submitit_job_id()) is not None:
        tags[launchers.SUBMITIT_JOB_TAG] = job_id
    dvc_hash = dvc_data_hash(to_absolute_path(cfg.data.path))
    if dvc_hash is not None:
        tags["dvc.data_hash"] = dvc_hash
    tags.update(dvc_exp.experiment_tags())
    if trial is not None:
        tags.update({tracking.TRIAL_NUMBER_TAG: str(trial.number), tracking.STUDY_NAME_TAG: trial.study_name})
    return tags


def _log_run_inputs(params: dict[str, Any], dataset: Any, hydra_dir: Path, data_stats: dict,
                    model_summary: str) -> None:
    """What the run starts from: its params, its data (:func:`cifar.tracking.dataset_input`), the job's composed
    config, Hydra's and its overrides (``.hydra/*.yaml``, with no URL's password), the data's stats, the uncommitted
    code and the model's layers. Each call gives the same values again, so that all of it can be tried again in an
    outage (and a resumed run logs them again as they were)."""
    mlflow.log_params(params)
    mlflow.log_input(dataset, context="training")
    for path in sorted(hydra_dir.glob("*.yaml")):
        mlflow.log_text(without_passwords(path.read_text()), f"hydra/{path.name}")
    mlflow.log_dict(data_stats, "data/stats.json")
    if diff := tracking.uncommitted_diff():
        mlflow.log_text(diff, UNCOMMITTED_DIFF)
    mlflow.log_text(model_summary, "model/summary.txt")


def _ema(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """``trainer.ema_decay``: an exponential moving average of the weights and BatchNorm statistics."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _lookahead(model: torch.nn.Module, cfg_trainer: DictConfig, total_steps: int) -> Lookahead | None:
    if cfg_trainer.lookahead_every is None:
        return None
    return Lookahead(model, cfg_trainer.lookahead_every, cfg_trainer.lookahead_decay, total_steps)


def _warn_of_an_earlier_run(output_dir: Path) -> None:
    """Say that a run writes over the checkpoints of an earlier run in ``output_dir`` (a dir named on the command
    line, run again), and how to keep them or continue that run; a sweep says so of its jobs' dirs."""
    if (output_dir / LAST).exists():
        log.warning("hydra.run.dir=%s holds an earlier run's checkpoints: this run writes over them (that run's MLflow "
                    "run and logged model stay). To keep them, stop this run and give it another hydra.run.dir; "
                    "where that run was stopped, continue it with trainer.resume=true", output_dir)


def _last_checkpoint(output_dir: Path, stopped_parent) -> dict | None:
    """The interrupted run's ``last.pt``, to resume from (``trainer.resume=true``); None for a job of
    a resumed sweep (``stopped_parent``) that had saved no epoch yet: it starts from the beginning."""
    path = output_dir / LAST
    if path.exists():
        try:
            return checkpoint.load(path)  # on the CPU: RNG states must stay there
        except CheckpointError as err:
            raise CheckpointError(f"trainer.resume=true but {err}: copy it again from where it came from, or "
                                  "drop trainer.resume to start a new run") from err
    if stopped_parent is not None:
        log.info("No %s in %s: this job of the resumed sweep starts from the beginning", path.name, output_dir)
        return None
    raise checkpoint.nothing_to_resume(path)


def _run_to_continue(resume_from: dict | None, output_dir: Path, stopped_parent) -> str | None:
    """The MLflow run that a resumed run or job continues: its last.pt's, or else, for a job of a resumed
    sweep (``stopped_parent``) that had started without saving an epoch, the run it had started (None
    where it had not)."""
    if resume_from is not None:
        return resume_from.get(MLFLOW_RUN_ID)
    return sweep_run.stopped_job_run_id(stopped_parent, output_dir.resolve())


def _already_finished(run) -> float | None:
    """A resumed run that had ended FINISHED (a job of a resumed sweep, say) is neither trained nor logged again."""
    metrics = run.data.metrics
    scores = ", ".join(f"{key} {metrics[key]:.4f}" for key in (tracking.BEST_VAL_ACC, "test/acc") if key in metrics)
    log.info("MLflow run %s had finished (%s): nothing to resume", run.info.run_id, scores or "no scores logged")
    return metrics.get(tracking.BEST_VAL_ACC)


def _fit(
    trainer: Trainer, cfg_trainer: DictConfig, trial: SweepTrial | None, diagnostics: Diagnostics,
    retrying: Retrying, resume_from: dict | None = None,
) -> FitResult:
    """Fit, logging each epoch to MLflow and, in an Optuna sweep, reporting it to the job's trial.

    A trial that the pruner stops, or whose loss diverges, is finished as PRUNED in the study here.
    """
    def on_epoch(metrics: EpochMetrics) -> str | None:
        retrying(mlflow.log_metrics, {**metrics.as_dict(), tracking.RUN_SECONDS: trainer.run_seconds()},
                 step=metrics.epoch)
        diagnostics.log(metrics.epoch, trainer.model, metrics.val)
        if trial is not None and trial.should_prune(metrics.epoch, metrics.val.acc):
            return PRUNED
        return None

    try:
        result = trainer.fit(cfg_trainer.epochs, cfg_trainer.patience, on_epoch, resume_from)
    except DivergedError:
        if trial is not None:
            trial.prune()
            retrying(mlflow.set_tags, {tracking.PRUNED_TAG: "true", "diverged": "true"})
        raise
    if result.stop_reason == PRUNED:
        trial.prune()
        retrying(mlflow.set_tag, tracking.PRUNED_TAG, "true")
    return result


def _log_run_seconds(trainer: Trainer, result: FitResult, retrying: Retrying) -> None:
    """The run's wall time once it has ended its work, at its last epoch's step: an MLflow metric's latest
    value is the one of its highest step, and each epoch logged the time so far."""
    retrying(mlflow.log_metric, tracking.RUN_SECONDS, trainer.run_seconds(), step=result.history[-1].epoch)


def _record_results(
    output_dir: Path, result: FitResult, test: Evaluation | None, test_labels: np.ndarray | None, with_plots: bool,
    retrying: Retrying,
) -> None:
    """The run's final metrics (with the test scores unless it was pruned), to MLflow and (but
    the timings) to ``metrics.json``; its per-epoch curves to ``epochs.csv`` (both in the output dir, for DVC);
    with ``with_plots``, its learning curves and (with test scores) confusion matrix as PNGs."""
    metrics = {"best_epoch": result.best_epoch, "epochs_run": len(result.history)}
    if result.best_val_acc is not None:
        metrics = {tracking.BEST_VAL_ACC: result.best_val_acc, **metrics}
    if test is not None:
        metrics.update({"test/loss": test.loss, "test/acc": test.acc})
    atomic_write_text(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output_dir / EPOCHS_FILE, _epochs_csv(result))
    # Time in training steps only (no compiling, validation, testing or data loading): time to accuracy.
    timings = {"train_seconds": sum(m.train_seconds for m in result.history), "warmup_seconds": result.warmup_seconds}
    retrying(mlflow.log_metrics, {**metrics, **timings})
    tags = {"stopped_early": str(result.stop_reason == "patience").lower()}
    if (best := output_dir / BEST).exists():  # later runs into the same dir write over it
        tags[tracking.BEST_CHECKPOINT_TAG] = file_md5(best)
    retrying(mlflow.set_tags, tags)
    if not with_plots:
        return
    figures = {"learning_curves.png": plots.learning_curves([m.as_dict() for m in result.history])}
    if test is not None:
        figures["confusion_matrix.png"] = plots.confusion_matrix(test_labels, test.predictions.numpy(), CLASSES)
    for filename, figure in figures.items():
        retrying(mlflow.log_figure, figure, f"plots/{filename}")
        plots.close(figure)


def _epochs_csv(result: FitResult) -> str:
    """One row per epoch: losses, accuracies (no val/* without a validation set) and lr (no timings,
    so that reruns give the same file)."""
    epochs = [(m.epoch, m.as_dict()) for m in result.history]
    columns = [c for c in ("train/loss", "train/acc", "train/grad_norm", "val/loss", "val/acc", "lr")
               if c in epochs[0][1]]
    rows = [",".join(["epoch", *columns])]
    rows += [",".join([str(epoch), *(repr(values[c]) for c in columns)]) for epoch, values in epochs]
    return "\n".join(rows) + "\n"


def _show_progress(setting: bool | None, multirun: bool) -> bool:
    return setting if setting is not None else (sys.stderr.isatty() and not multirun)
