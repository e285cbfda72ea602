"""The diagnostics' numbers: per-class accuracy, per-layer gradients and weights."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from cifar import diagnostics, plots
from cifar.data import CLASSES
from cifar.models import build_model

SMALL_CNN = {"name": "simplecnn", "channels": [4, 8], "hidden": 16, "dropout": 0.0, "batch_norm": True}


def test_per_class_accuracy_counts_each_class_on_its_own():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 2, 1, 0, 2])
    accuracy = diagnostics.per_class_accuracy(labels, predictions)
    assert accuracy == {"airplane": 0.5, "automobile": 0.5, "bird": 1.0}  # classes without images left out


def test_gradients_and_weights_are_taken_per_conv_and_linear_layer():
    model = build_model(OmegaConf.create(SMALL_CNN))
    assert diagnostics.layer_gradients(model) == {}  # no backward pass yet
    model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    gradients = diagnostics.layer_gradients(model)
    assert list(gradients) == ["0 Conv2d", "4 Conv2d", "9 Linear", "12 Linear"]  # input to output, no BatchNorm
    first = model[0].weight.grad.abs()
    assert gradients["0 Conv2d"] == (first.mean().item(), first.max().item())
    weights = diagnostics.layer_weights(model)
    assert list(weights) == list(gradients) and weights["9 Linear"].size == 8 * 8 * 8 * 16


def test_the_figures_render(tmp_path):
    model = build_model(OmegaConf.create(SMALL_CNN))
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10)
    figures = [
        plots.gradient_flow(diagnostics.layer_gradients(model)),
        plots.weight_histograms(diagnostics.layer_weights(model)),
        plots.prediction_grid(images, labels, np.roll(labels, 1), CLASSES),
        plots.per_class_accuracy(dict(zip(CLASSES, np.linspace(0, 1, 10)))),
    ]
    for index, figure in enumerate(figures):
        figure.savefig(tmp_path / f"{index}.png")
        plots.close(figure)
        assert (tmp_path / f"{index}.png").stat().st_size > 5000
