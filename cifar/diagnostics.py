"""Opt-in diagnostics (``diagnostics=all``): the plots students make by hand, at chosen epochs.

At each epoch in ``diagnostics.epochs`` the run logs, under ``diagnostics/epoch_NNN/`` in MLflow:
- ``gradient_flow.png``: mean and max |gradient| of each layer's weights, from the epoch's last step;
- ``weights.png``: the distribution of each layer's weights;
- ``predictions.png``: a fixed sample of validation images with predicted and true classes, mistakes in red;
- ``per_class.png``: validation accuracy per class (also logged as ``val/class_acc/<class>`` metrics).
Everything comes from the epoch's own validation pass: no extra evaluation is run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar import plots
from cifar.data import CLASSES
from cifar.engine import Evaluation
from cifar.outages import Retrying

log = logging.getLogger(__name__)


class Diagnostics:
    def __init__(self, cfg: Any, val_images: torch.Tensor, val_labels: torch.Tensor, retrying: Retrying):
        self.cfg = cfg
        self.retrying = retrying
        self.epochs = set(cfg.epochs)
        self.sample = slice(0, cfg.samples)  # the same images every epoch, to compare the grids
        self.sample_images = val_images[self.sample].permute(0, 2, 3, 1).cpu().numpy()
        self.val_labels = val_labels.cpu().numpy()

    def log(self, epoch: int, model: nn.Module, val: Evaluation) -> None:
        """Log the chosen diagnostics if ``epoch`` is one of ``diagnostics.epochs``."""
        import mlflow

        if epoch not in self.epochs:
            return
        start = time.perf_counter()
        predictions = val.predictions.numpy()
        per_class = per_class_accuracy(self.val_labels, predictions)
        figures = {}
        if self.cfg.gradient_flow:
            figures["gradient_flow.png"] = plots.gradient_flow(layer_gradients(model))
        if self.cfg.weights:
            figures["weights.png"] = plots.weight_histograms(layer_weights(model))
        if self.cfg.predictions:
            figures["predictions.png"] = plots.prediction_grid(
                self.sample_images, self.val_labels[self.sample], predictions[self.sample], CLASSES)
        if self.cfg.per_class:
            figures["per_class.png"] = plots.per_class_accuracy(per_class)
            self.retrying(mlflow.log_metrics, {f"val/class_acc/{c}": a for c, a in per_class.items()}, step=epoch)
        for filename, figure in figures.items():
            self.retrying(mlflow.log_figure, figure, f"diagnostics/epoch_{epoch:03d}/{filename}")
            plots.close(figure)
        log.info("Diagnostics of epoch %d logged in %.2f s", epoch, time.perf_counter() - start)


def layer_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The weight tensors of the convolution and linear layers, by parameter name, flattened."""
    return {name: p.detach().float().cpu().numpy().ravel() for name, p in _weights(model)}


def layer_gradients(model: nn.Module) -> dict[str, tuple[float, float]]:
    """(mean, max) |gradient| of each layer's weights, as the last backward pass left them."""
    return {
        name: (p.grad.abs().mean().item(), p.grad.abs().max().item())
        for name, p in _weights(model)
        if p.grad is not None
    }


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    counts = np.bincount(labels, minlength=len(CLASSES))
    correct = np.bincount(labels[labels == predictions], minlength=len(CLASSES))
    return {c: float(correct[i] / counts[i]) for i, c in enumerate(CLASSES) if counts[i]}


def _weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights of conv and linear layers, named ``<module name> <type>``, input to output."""
    return [(f"{name} {type(module).__name__}", module.weight) for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]
