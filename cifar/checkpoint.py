"""Checkpoints in the run's output directory, each written to a temp file then renamed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cifar.errors import CheckpointError
from cifar.files import atomic_write
from cifar.interrupts import interrupts_held

BEST = "best.pt"
LAST = "last.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all: a failed write leaves the previous file as it was.

    It is serialised in memory first, so that a full disk surfaces as the OSError it is (torch's zip
    writer turns it into an opaque RuntimeError).
    """
    buffer = io.BytesIO()
    with interrupts_held():
        torch.save(state, buffer)
        try:
            atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        except OSError as err:
            raise CheckpointError(
                f"could not write checkpoint {path} ({err.strerror or err}): free some disk space or set "
                f"hydra.run.dir to a writable place; the previous {path.name}, if any, is intact"
            ) from err


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)
