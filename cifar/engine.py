"""One training epoch and one evaluation pass: the only code that runs per batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from cifar.batches import Normalizer
from cifar.device import Runtime
from cifar.errors import DivergedError


@dataclass
class Pass:
    """Mean loss and accuracy over one pass through a split."""

    loss: float
    acc: float
    images: int
    grad_norm: float | None = field(default=None, kw_only=True)  # with max_grad_norm: the steps' mean, unclipped


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    normalize: Normalizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: nn.Module,
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
    on_step: Callable[[], None] | None = None,
    max_grad_norm: float | None = None,
) -> Pass:
    """Train over ``batches``; sums stay on the device so no step waits for a host sync. ``scaler`` is the
    run's (:meth:`Runtime.grad_scaler`), kept from epoch to epoch. ``max_grad_norm``: the gradients of all the
    parameters together are scaled down to this L2 norm where it is above (``trainer.grad_clip_norm``); their
    norm before, which that computes anyway, is averaged over the steps (those whose fp16 gradients overflowed,
    which the scaler skips, left out)."""
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    norm_sum = torch.zeros((), device=runtime.device)
    norm_steps = torch.zeros((), dtype=torch.int64, device=runtime.device)
    images = 0
    for x, y in batches:
        with runtime.autocast():
            logits = model(normalize(x))
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)  # the norm of the true gradients, not of the scaled-up ones
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            finite = norm.isfinite()
            norm_sum += torch.where(finite, norm, 0.0)
            norm_steps += finite
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        images += len(y)
        if on_step is not None:
            on_step()
    mean_loss = loss_sum.item() / max(images, 1)
    if not math.isfinite(mean_loss):
        raise DivergedError(f"train/loss is {mean_loss}")
    grad_norm = None
    if max_grad_norm is not None:  # NaN where every step overflowed: the column stays, in epochs.csv too
        grad_norm = norm_sum.item() / steps if (steps := norm_steps.item()) else math.nan
    return Pass(loss=mean_loss, acc=correct.item() / max(images, 1), images=images, grad_norm=grad_norm)


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation (``trainer.tta_flip``, ``trainer.tta_translate``): see predict_logits."""

    flip: bool = False
    translate: bool = False


def predict_logits(model: nn.Module, x: torch.Tensor, tta: TTA = TTA()) -> torch.Tensor:
    """The model's logits for normalised ``x``; with ``tta.flip``, the mean of the image's and its mirror image's.

    ``tta.translate`` (cifar10-airbench's multi-crop TTA) makes that half the result, the other half
    the mean of the same for the image shifted by one pixel diagonally each way (crops of a 1-pixel
    reflect padding at its top-left and bottom-right corners).
    """
    logits = _flip_mean(model, x, tta.flip)
    if tta.translate:
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        height, width = x.shape[-2:]
        shifted = (padded[..., :height, :width], padded[..., 2:, 2:])
        logits = logits / 2 + sum(_flip_mean(model, view, tta.flip) for view in shifted) / 4
    return logits


def _flip_mean(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = model(x)
    if flip:
        logits = (logits + model(x.flip(-1))) / 2
    return logits


@dataclass
class Evaluation(Pass):
    predictions: torch.Tensor


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    runtime: Runtime,
    tta: TTA = TTA(),
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """Loss, accuracy and predicted classes over uint8 ``images``, in large batches (TTA: see predict_logits);
    ``on_batch`` is given each batch's number of images once it is scored."""
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    predictions = torch.empty_like(labels)
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with runtime.autocast():
            logits = predict_logits(model, normalize(x), tta)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        predictions[start : start + batch_size] = logits.argmax(1)
        if on_batch is not None:
            on_batch(len(y))
    n = max(len(labels), 1)
    return Evaluation(
        loss=loss_sum.item() / n,
        acc=(predictions == labels).sum().item() / n,
        images=len(labels),
        predictions=predictions.cpu(),
    )
