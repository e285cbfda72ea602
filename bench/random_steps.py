"""This trainer's training step on random uint8 images, for the benchmarks of the step alone
(``profile_step.py``, ``layer_order.py``): no data, no validation, the CPU's defaults."""

from __future__ import annotations

import torch
from torch import nn

from cifar.batches import Normalizer
from cifar.config import compose
from cifar.device import make_runtime
from cifar.engine import train_epoch
from cifar.models import build_model


class RandomSteps:
    """``steps`` batches of ``batch`` random images and labels, and the runtime the CPU's defaults give."""

    def __init__(self, batch: int, steps: int):
        self.runtime = make_runtime("cpu", amp=None, channels_last=None, compile=False, threads=None)
        torch.manual_seed(0)
        self.batch = batch
        self.images = torch.randint(0, 256, (batch * steps, 3, 32, 32), dtype=torch.uint8)
        self.labels = torch.randint(0, 10, (len(self.images),))
        self.normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, self.runtime.device, self.runtime.channels_last)

    def model(self, name: str) -> nn.Module:
        """An option of conf/model, built as its config says, in the runtime's memory format."""
        model = build_model(compose([f"model={name}"]).model)
        return model.to(memory_format=torch.channels_last) if self.runtime.channels_last else model

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """One pass of ``model`` over the batches, as ``cifar.engine.train_epoch`` trains an epoch."""
        batches = ((self.images[i : i + self.batch], self.labels[i : i + self.batch])
                   for i in range(0, len(self.images), self.batch))
        train_epoch(model, batches, self.normalize, optimizer, None, nn.CrossEntropyLoss(), self.runtime)
