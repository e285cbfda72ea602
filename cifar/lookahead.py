"""Lookahead of the weights, as cifar10-airbench trains with it (``trainer.lookahead_every``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Lookahead:
    """A slow copy of the model's weights and BatchNorm statistics (every floating-point entry of its
    state dict) that, every ``every`` steps, moves toward the trained ones and is copied back into the
    model: an exponential moving average that the training goes on from.

    At each sync the slow copy keeps ``decay * (step / total_steps) ** 3`` of itself: nearly nothing
    early on, when the weights move fast, and ``decay`` at the end. After the last step the model takes
    the slow copy (``finish``), dropping the fast steps since the last sync.
    """

    def __init__(self, model: nn.Module, every: int, decay: float, total_steps: int):
        self.every = every
        self.decay = decay
        self.total_steps = total_steps
        self.step = 0
        self.slow = {name: value.detach().clone() for name, value in _float_state(model).items()}

    def after_step(self, model: nn.Module) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self._sync(model, self.decay * (self.step / self.total_steps) ** 3)

    def finish(self, model: nn.Module) -> None:
        """Put the slow copy into the model: the weights that are evaluated and kept."""
        self._sync(model, 1.0)

    @torch.no_grad()
    def _sync(self, model: nn.Module, keep: float) -> None:
        for name, value in _float_state(model).items():
            slow = self.slow[name]
            slow.lerp_(value, 1.0 - keep)
            value.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "slow": self.slow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        for name, value in state["slow"].items():
            self.slow[name].copy_(value)


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and float buffers (BatchNorm statistics), sharing their storage with the model."""
    return {name: value for name, value in model.state_dict().items() if value.is_floating_point()}
