"""This trainer's training step on random uint8 images, for the benchmarks of the step alone
(``profile_step.py``, ``layer_order.py``): no data, no validation, the CPU's defaults."""

from __future__ import annotations

import ctypes
import platform

import torch
from torch import nn

from cifar.batches import Normalizer
from cifar.config import compose
from cifar.device import make_runtime
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
    """``steps`` batches of ``batch`` random images and labels, and the runtime the CPU's defaults give."""

    def __init__(self, batch: int, steps: int):
        keep_freed_memory()
        self.runtime = make_runtime("cpu", amp=None, channels_last=None, compile=False, threads=None)
        torch.manual_seed(0)
        self.batch = batch
        self.images = torch.randint(0, 256, (batch * steps, 3, 32, 32), dtype=torch.uint8)
        self.labels = torch.randint(0, 10, (len(self.images),))
        self.normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, self.runtime.device, self.runtime.channels_last)

    def model(self, name: str) -> nn.Module:
        """An option of conf/model, built as its config says, in the runtime's memory format."""
        return self.in_memory_format(build_model(compose([f"model={name}"]).model))

    def in_memory_format(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.runtime.channels_last else model

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """One pass of ``model`` over the batches, as ``cifar.engine.train_epoch`` trains an epoch."""
        batches = ((self.images[i : i + self.batch], self.labels[i : i + self.batch])
                   for i in range(0, len(self.images), self.batch))
        train_epoch(model, batches, self.normalize, optimizer, None, nn.CrossEntropyLoss(), self.runtime,
                    self.runtime.grad_scaler())
