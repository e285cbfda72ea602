"""Checkpoints in the run's output directory, each written to a temp file then renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cifar.files import atomic_write

BEST = "best.pt"
LAST = "last.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)
