"""Checkpoints in the run's output directory, each written to a temp file then renamed."""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import torch

from cifar.errors import CheckpointError
from cifar.files import atomic_write

BEST = "best.pt"
LAST = "last.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all: a failed write leaves the previous file as it was.

    It is serialised in memory first, so that a full disk surfaces as the OSError it is (torch's zip
    writer turns it into an opaque RuntimeError).
    """
    buffer = io.BytesIO()
    with _interrupts_held():
        torch.save(state, buffer)
        try:
            atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        except OSError as err:
            raise CheckpointError(
                f"could not write checkpoint {path} ({err.strerror or err}): free some disk space or set "
                f"hydra.run.dir to a writable place; the previous {path.name}, if any, is intact"
            ) from err


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them.

    An interrupt inside ``torch.save`` surfaces as a RuntimeError from its zip writer instead of
    the interrupt, so the run would end FAILED rather than KILLED.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda n, _: received.append(n)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received[:1]:
            signal.raise_signal(number)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)
