"""The training task: config in, best validation accuracy out, everything tracked in MLflow."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from cifar import plots, tracking
from cifar.batches import Augmenter, Normalizer, steps_per_epoch
from cifar.data import CLASSES, load_cifar10
from cifar.device import make_runtime
from cifar.models import build_model, count_parameters, flops_per_image
from cifar.optim import build_optimizer, build_scheduler
from cifar.engine import Evaluation
from cifar.trainer import FitResult, Trainer, make_splits

log = logging.getLogger("cifar.train")


def run(cfg: DictConfig) -> float:
    """Train, validate and test one model; return its best validation accuracy."""
    hydra_cfg = HydraConfig.get()
    runtime = make_runtime(cfg.trainer.device, cfg.trainer.amp, cfg.trainer.channels_last, cfg.trainer.threads)
    data = load_cifar10(to_absolute_path(cfg.data.path), to_absolute_path(cfg.data.cache_dir), cfg.data.download)
    augment = Augmenter(cfg.data.augment.crop_padding, cfg.data.augment.pad_mode, cfg.data.augment.flip)
    splits = make_splits(data, cfg.data, cfg.seed, augment, runtime.device)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model_info = {"model.parameters": count_parameters(model), "model.flops_per_image": flops_per_image(model)}
    if cfg.trainer.compile:
        model.compile()
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    steps = steps_per_epoch(splits.n_train, cfg.data.batch_size)
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps, cfg.trainer.epochs)

    tracking.configure(cfg.mlflow)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)
    log.info(
        "%s on %s (amp=%s, channels_last=%s): %d train / %d val / %d test images; %s parameters, %s FLOPs per image",
        cfg.model.name, runtime.device, runtime.amp, runtime.channels_last, splits.n_train,
        len(splits.val_labels), len(splits.test_labels),
        f"{model_info['model.parameters']:,}", f"{model_info['model.flops_per_image']:,}",
    )
    sweep = tracking.read_sweep(hydra_cfg.sweep.dir) if multirun else None
    overrides = list(hydra_cfg.overrides.task)
    name = tracking.run_name(overrides, sweep["swept_keys"] if sweep else None)
    tags = {
        **tracking.git_state(),
        "data.hash": data.content_hash,
        "device": str(runtime.device),
        "amp": str(runtime.amp).lower(),
        "torch.version": torch.__version__,
        "hydra.output_dir": str(output_dir.resolve()),
    }
    with tracking.job_run(name, sweep and sweep["parent_run_id"], tags) as run:
        mlflow.log_params({**tracking.flatten(cfg), **model_info})
        mlflow.log_artifacts(str(output_dir / ".hydra"), "hydra")
        mlflow.log_dict(data.stats, "data/stats.json")
        trainer = Trainer(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing),
            splits=splits,
            normalize=Normalizer.from_stats(data.mean, data.std, runtime.device, runtime.channels_last),
            augment=augment,
            runtime=runtime,
            batch_size=cfg.data.batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            generator=torch.Generator(runtime.device).manual_seed(cfg.seed),
            checkpoint_dir=output_dir,
            show_progress=_show_progress(cfg.trainer.progress, multirun),
        )
        result = trainer.fit(
            cfg.trainer.epochs,
            cfg.trainer.patience,
            on_epoch=lambda m: mlflow.log_metrics(m.as_dict(), step=m.epoch),
        )
        test = trainer.test_best()
        _log_results(result, test, splits.test_labels.cpu().numpy())
        log.info(
            "best val/acc %.4f at epoch %d; test/acc %.4f (loss %.4f); MLflow run %s",
            result.best_val_acc, result.best_epoch, test.acc, test.loss, run.info.run_id,
        )
    return result.best_val_acc


def _log_results(result: FitResult, test: Evaluation, test_labels: np.ndarray) -> None:
    """The run's final metrics and its learning-curve and confusion-matrix figures."""
    mlflow.log_metrics(
        {
            "test/loss": test.loss,
            "test/acc": test.acc,
            tracking.BEST_VAL_ACC: result.best_val_acc,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
        }
    )
    mlflow.set_tag("stopped_early", str(result.stopped_early).lower())
    figures = {
        "learning_curves.png": plots.learning_curves([m.as_dict() for m in result.history]),
        "confusion_matrix.png": plots.confusion_matrix(test_labels, test.predictions.numpy(), CLASSES),
    }
    for filename, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{filename}")
        plots.close(figure)


def _show_progress(setting: bool | None, multirun: bool) -> bool:
    return setting if setting is not None else (sys.stderr.isatty() and not multirun)
