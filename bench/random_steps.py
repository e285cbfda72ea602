"""This trainer's training step on random uint8 images, for the benchmarks of the step alone
(``profile_step.py``, ``layer_order.py``, ``step_cost.py``): no data, no validation, the device's defaults
(the CPU's unless told)."""

from __future__ import annotations

import ctypes
import platform

import torch
from torch import nn

from cifar.batches import Normalizer
from cifar.config import compose
from cifar.device import Runtime, make_runtime
from cifar.engine import train_epoch
from cifar.models import build_model


# glibc's malloc.h: mallopt's parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Keep glibc's malloc from giving a step's freed activations back to the system, as in a training run.

    A process that only runs steps faults them in again every step (4,000 to 6,000 pages of 4 KiB for
    simplecnn at batch 128, 13 to 19 ms in the kernel); a training run's process does not (docs/speed.md,
    glibc's malloc). With the thresholds fixed (blocks up to 32 MiB from the heap, up to 1 GiB of its
    free top kept), the steps do not either.
    """
    if platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)


class RandomSteps:
    """``steps`` batches of ``batch`` random images and labels on ``device`` (``trainer.device``'s values), and the
    runtime its defaults give."""

    def __init__(self, batch: int, steps: int, device: str = "cpu"):
        keep_freed_memory()
        self.runtime = make_runtime(device, amp=None, channels_last=None, compile=False, threads=None)
        torch.manual_seed(0)
        self.batch = batch
        self.images = torch.randint(0, 256, (batch * steps, 3, 32, 32), dtype=torch.uint8, device=self.runtime.device)
        self.labels = torch.randint(0, 10, (len(self.images),), device=self.runtime.device)
        self.normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, self.runtime.device, self.runtime.channels_last)

    def model(self, name: str) -> nn.Module:
        """An option of conf/model, built as its config says, in the runtime's memory format."""
        return self.on_device(build_model(compose([f"model={name}"]).model))

    def on_device(self, model: nn.Module) -> nn.Module:
        """``model`` on the runtime's device, in its memory format."""
        model = model.to(self.runtime.device)
        return model.to(memory_format=torch.channels_last) if self.runtime.channels_last else model

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime | None = None,
              scaler: torch.amp.GradScaler | None = None, max_grad_norm: float | None = None) -> None:
        """One pass of ``model`` over the batches, as ``cifar.engine.train_epoch`` trains an epoch: with the
        runtime's defaults, or ``runtime`` (on the same device), its scaler unless ``scaler``, and clipping."""
        runtime = runtime or self.runtime
        batches = ((self.images[i : i + self.batch], self.labels[i : i + self.batch])
                   for i in range(0, len(self.images), self.batch))
        train_epoch(model, batches, self.normalize, optimizer, None, nn.CrossEntropyLoss(), runtime,
                    scaler or runtime.grad_scaler(), max_grad_norm=max_grad_norm)
