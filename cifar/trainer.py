"""The epoch loop: train, validate, keep the best checkpoint, stop early."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.hooks import RemovableHandle

from cifar import checkpoint
from cifar.batches import Augmenter, Normalizer, steps_per_epoch, to_tensors, train_batches
from cifar.data import Cifar10, split_indices
from cifar.device import Runtime
from cifar.engine import TTA, Evaluation, Pass, evaluate, train_epoch
from cifar.files import BEST, LAST
from cifar.inference import SPEC
from cifar.interrupts import interrupts_held
from cifar.lookahead import Lookahead
from cifar.models import first_conv
from cifar.progress import Progress

log = logging.getLogger(__name__)

RUN_SECONDS = "run_seconds"  # in last.pt: the run's wall time up to it (see Trainer.run_seconds)


@dataclass
class Splits:
    """Train (padded for cropping), validation and test images as uint8 tensors on the device; with
    ``data.val_size=0`` the validation tensors are empty and every training image is trained on."""

    train_padded: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def validates(self) -> bool:
        return len(self.val_labels) > 0

    def train_images(self, padding: int, count: int) -> torch.Tensor:
        """``count`` training images spread evenly over the split (a decoded copy may be sorted by class),
        uncropped: without the ``padding`` they were stored with."""
        size = self.test_images.shape[-1]
        every = max(1, self.n_train // count)
        return self.train_padded[::every][:count, :, padding : padding + size, padding : padding + size]


def make_splits(data: Cifar10, cfg_data: Any, seed: int, augment: Augmenter, device: torch.device) -> Splits:
    """Hold out a seeded validation set from train, then apply ``limit`` and ``test_limit``."""
    train_idx, val_idx, test_idx = split_indices(len(data.train_labels), len(data.test_labels), cfg_data, seed)
    train_x, train_y = to_tensors(data.train_images[train_idx], data.train_labels[train_idx], device)
    val_x, val_y = to_tensors(data.train_images[val_idx], data.train_labels[val_idx], device)
    test_x, test_y = to_tensors(data.test_images[test_idx], data.test_labels[test_idx], device)
    flips = torch.Generator(device).manual_seed(seed)  # alternate_flip's fixed half, the same on resume
    return Splits(augment.prepare(train_x, flips), train_y, val_x, val_y, test_x, test_y)


@dataclass
class EpochMetrics:
    epoch: int
    train: Pass
    val: Pass | None  # None without a validation set
    lr: float
    seconds: float
    train_seconds: float

    def as_dict(self) -> dict[str, float]:
        """The epoch's metrics, without ``val/*`` where there is no validation set."""
        val = {"val/loss": self.val.loss, "val/acc": self.val.acc} if self.val is not None else {}
        return {
            "train/loss": self.train.loss,
            "train/acc": self.train.acc,
            **val,
            "lr": self.lr,
            "epoch_seconds": self.seconds,
            "train/images_per_s": self.train.images / self.train_seconds,
            **({"train/grad_norm": self.train.grad_norm} if self.train.grad_norm is not None else {}),
        }

    def summary(self, epochs: int) -> str:
        val = f"val loss {self.val.loss:.4f} acc {self.val.acc:.4f}  " if self.val is not None else ""
        return (
            f"epoch {self.epoch}/{epochs}  train loss {self.train.loss:.4f} acc {self.train.acc:.4f}  "
            f"{val}lr {self.lr:.2e}  {self.seconds:.1f}s ({self.train.images / self.train_seconds:.0f} img/s)"
        )


@dataclass
class FitResult:
    best_val_acc: float | None = None  # None without a validation set: best.pt then holds the last epoch's weights
    best_epoch: int = 0
    stop_reason: str | None = None  # why training ended before its last epoch: "patience", or on_epoch's reason
    history: list[EpochMetrics] = field(default_factory=list)
    warmup_seconds: float = 0.0  # compiling the model before the first epoch (trainer.compile), not in train_seconds


@dataclass
class Trainer:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: nn.Module
    splits: Splits
    normalize: Normalizer
    augment: Augmenter
    runtime: Runtime
    batch_size: int
    eval_batch_size: int
    generator: torch.Generator
    checkpoint_dir: Path
    show_progress: bool
    tta: TTA = TTA()  # the views of each image whose logits are averaged: see engine.predict_logits
    tta_in_validation: bool = True  # False: each epoch's validation scores the plain images, the test tta's views
    ema: AveragedModel | None = None  # updated after every step; evaluated and saved instead of the model
    lookahead: Lookahead | None = None  # synced after every step; the model takes its slow weights at the end
    whiten_bias_epochs: int | None = None  # then the first convolution's bias stays as it is: see _freeze_first_bias
    max_grad_norm: float | None = None  # clip the gradients' L2 norm to it before each step (trainer.grad_clip_norm)
    checkpoint_every: int = 1  # write the checkpoints every N epochs (and at the end): see fit
    inference_spec: dict[str, Any] = field(default_factory=dict)  # in both checkpoints: see cifar.inference
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)  # saved with last.pt as is
    _bias_hook: RemovableHandle | None = field(default=None, init=False, repr=False)
    _scaler: torch.amp.GradScaler = field(init=False, repr=False)  # the runtime's, kept from epoch to epoch
    _started: float = field(default_factory=time.perf_counter, init=False, repr=False)
    _seconds_before: float = field(default=0.0, init=False, repr=False)  # a resumed run's, up to its last.pt

    def __post_init__(self) -> None:
        self._scaler = self.runtime.grad_scaler()

    def run_seconds(self) -> float:
        """The run's wall time so far: since this trainer was made and, where it resumed, in the processes
        before, up to the ``last.pt`` it resumed from (not the time they were stopped)."""
        return self._seconds_before + time.perf_counter() - self._started

    def fit(
        self,
        epochs: int,
        patience: int | None,
        on_epoch: Callable[[EpochMetrics], str | None],
        resume_from: dict[str, Any] | None = None,
    ) -> FitResult:
        """Train for ``epochs``, saving ``best.pt`` on each new best val/acc (every epoch where there is
        no validation set) and ``last.pt`` every epoch, in the background (``checkpoint.Writer``).

        With ``checkpoint_every`` N > 1 they are written at every Nth epoch only, and when the fit ends
        (an interrupt, an early stop, an error); meanwhile the newest epoch's are kept in host memory. A
        process killed outright (SIGKILL, out of memory) then loses up to N - 1 epochs, which a resumed
        fit trains (and reports) again.

        ``on_epoch`` sees each epoch's metrics and may return a reason to stop now (a pruned trial).
        ``resume_from`` (a ``last.pt``) continues an interrupted fit from the epoch after it, with
        every state it held, so that the result is the one of an uninterrupted fit.
        """
        result = FitResult()
        first_epoch = 1
        if resume_from is not None:
            first_epoch = self._restore(resume_from, result) + 1
        if self.runtime.compile:
            result.warmup_seconds = self.warm_up()
        steps = steps_per_epoch(self.splits.n_train, self.batch_size)
        with checkpoint.Writer() as writer:
            for epoch in range(first_epoch, epochs + 1):
                metrics = self._epoch(epoch, epochs, steps)
                result.history.append(metrics)
                log.info(metrics.summary(epochs))
                # Reported before last.pt is written: a process killed in between repeats this epoch when
                # resumed (and reports it again), rather than never reporting it. Ctrl-C, SIGTERM or a requeue
                # (SIGUSR2) waits until the epoch's checkpoints are queued, so that the epoch is kept.
                with interrupts_held():
                    result.stop_reason = on_epoch(metrics)
                    files = {}
                    val = metrics.val
                    if val is None or result.best_val_acc is None or val.acc > result.best_val_acc:
                        result.best_val_acc, result.best_epoch = val.acc if val is not None else None, epoch
                        files[self.checkpoint_dir / BEST] = self._best_state(epoch, result)
                    files[self.checkpoint_dir / LAST] = self._state(epoch, result)
                    # written while the next epoch trains, or kept until the next write
                    writer.submit(files, write=epoch % self.checkpoint_every == 0)
                if result.stop_reason is None and patience is not None and epoch - result.best_epoch >= patience:
                    log.info("Stopping early: no better val/acc for %d epochs (best %.4f at epoch %d)",
                             patience, result.best_val_acc, result.best_epoch)
                    result.stop_reason = "patience"
                if result.stop_reason is not None:
                    break
        return result

    def _epoch(self, epoch: int, epochs: int, steps: int) -> EpochMetrics:
        """Train one epoch, then validate where there is a validation set."""
        if self.whiten_bias_epochs is not None and epoch > self.whiten_bias_epochs:
            self._freeze_first_bias()
        start = time.perf_counter()
        with Progress(steps * self.batch_size, f"epoch {epoch}/{epochs}", self.show_progress) as progress:
            train = train_epoch(
                self.model,
                train_batches(
                    self.splits.train_padded,
                    self.splits.train_labels,
                    self.batch_size,
                    self.augment,
                    self.generator,
                    epoch,
                ),
                self.normalize,
                self.optimizer,
                self.scheduler,
                self.loss_fn,
                self.runtime,
                self._scaler,
                on_step=lambda: self._after_step(progress),
                max_grad_norm=self.max_grad_norm,
            )
        if self.lookahead is not None and epoch == epochs:
            self.lookahead.finish(self.model)
        train_seconds = time.perf_counter() - start
        val = None
        if self.splits.validates:
            val = self.evaluate(self.splits.val_images, self.splits.val_labels, self.val_tta,
                                f"epoch {epoch}/{epochs} val")
        return EpochMetrics(
            epoch=epoch,
            train=train,
            val=val,
            lr=self.optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - start,
            train_seconds=train_seconds,
        )

    def _freeze_first_bias(self) -> None:
        """From now on, drop the first convolution's bias gradient as soon as each backward pass has
        made it, so that the optimizer leaves the bias as it is (no step, momentum or weight decay),
        as cifar10-airbench does by detaching it. Turning its ``requires_grad`` off instead would make
        torch.compile recompile the model in the middle of training."""
        if self._bias_hook is None:
            self._bias_hook = first_conv(self.model).bias.register_post_accumulate_grad_hook(_drop_grad)

    def warm_up(self) -> float:
        """Run a training step's forward and backward and an evaluation batch, then put back the weights,
        BatchNorm statistics and RNG state: torch.compile compiles then, outside the timed epochs, and
        training goes on as if this had not run. Returns the seconds it took."""
        start = time.perf_counter()
        weights = {name: value.clone() for name, value in self.model.state_dict().items()}
        x = self.splits.train_images(self.augment.padding, self.batch_size)
        device = self.runtime.device
        gpu = [] if device.type == "cpu" else [device]  # whose generator dropout draws from there (CUDA, MPS)
        with torch.random.fork_rng(devices=gpu, device_type=device.type):  # dropout's draws
            self.model.train()
            with self.runtime.autocast():
                loss = self.loss_fn(self.model(self.normalize(x)), self.splits.train_labels[: self.batch_size])
            loss.backward()
            self.model.zero_grad(set_to_none=True)
            # a batch of the test split, the one split there always is
            test = slice(0, self.eval_batch_size)
            self.evaluate(self.splits.test_images[test], self.splits.test_labels[test], self.tta)
        self.model.load_state_dict(weights)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are scored and kept as ``best.pt``: the EMA's where there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def val_tta(self) -> TTA:
        return self.tta if self.tta_in_validation else TTA()

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, tta: TTA, bar: str = "") -> Evaluation:
        """Score the evaluated model; with a ``bar`` name, behind a live bar of it where progress is shown."""
        with Progress(len(labels), bar, self.show_progress and bool(bar)) as progress:
            return evaluate(self.eval_model, images, labels, self.normalize, self.eval_batch_size, self.runtime, tta,
                            on_batch=progress.advance)

    def test_best(self) -> Evaluation:
        """Load ``best.pt`` into the evaluated model and score it on the test split."""
        state = checkpoint.load(self.checkpoint_dir / BEST, self.runtime.device)
        self.eval_model.load_state_dict(state["model"])
        return self.evaluate(self.splits.test_images, self.splits.test_labels, self.tta, "test")

    def _after_step(self, progress: Progress) -> None:
        if self.lookahead is not None:
            self.lookahead.after_step(self.model)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        progress.advance(self.batch_size)

    def _best_state(self, epoch: int, result: FitResult) -> dict[str, Any]:
        """The evaluated weights, score and inference spec only: the same bytes for the same training (a DVC output)."""
        return {"epoch": epoch, "model": self.eval_model.state_dict(), "best_val_acc": result.best_val_acc,
                SPEC: self.inference_spec}

    def _state(self, epoch: int, result: FitResult) -> dict[str, Any]:
        """Everything a resumed fit needs, including timings and the MLflow run id."""
        return {
            **self.checkpoint_extra,
            "epoch": epoch,
            "model": self.model.state_dict(),  # the trained weights, not the EMA's that best.pt holds
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            SPEC: self.inference_spec,
            "best_val_acc": result.best_val_acc,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self._scaler.state_dict() if self._scaler.is_enabled() else None,
            "best_epoch": result.best_epoch,
            "history": list(result.history),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout draws from it on the CPU
            "device_rng": _device_rng_state(self.runtime.device),  # and on a GPU from the GPU's own
            RUN_SECONDS: self.run_seconds(),
        }

    def _restore(self, state: dict[str, Any], result: FitResult) -> int:
        """Load a ``last.pt`` into the model, optimizer, scheduler, RNGs and ``result``; return its epoch."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler.is_enabled() and state.get("grad_scaler") is not None:  # float16: its loss scale so far
            self._scaler.load_state_dict(state["grad_scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.runtime.device.type != "cpu" and state.get("device_rng") is not None:
            torch.get_device_module(self.runtime.device).set_rng_state(state["device_rng"], self.runtime.device)
        result.best_val_acc, result.best_epoch = state["best_val_acc"], state["best_epoch"]
        result.history.extend(state["history"])
        self._seconds_before = state.get(RUN_SECONDS, 0.0)  # none in a last.pt of code before it was kept
        if result.best_val_acc is None:
            log.info("Resuming after epoch %d", state["epoch"])
        else:
            log.info("Resuming after epoch %d (best val/acc %.4f at epoch %d)", state["epoch"], result.best_val_acc,
                     result.best_epoch)
        return state["epoch"]


def _device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The state of the random generator that dropout draws from on a GPU (CUDA, MPS); None on the CPU,
    whose generator is torch.get_rng_state's."""
    return None if device.type == "cpu" else torch.get_device_module(device).get_rng_state(device)


def _drop_grad(param: torch.Tensor) -> None:
    param.grad = None
