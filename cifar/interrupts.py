"""Deferring Ctrl-C, SIGTERM and submitit's requeue signal past short calls that must not be cut in the middle."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

# SIGUSR2: SLURM's signal to a job that is preempted or whose time is almost up, on which submitit requeues it
HELD = (signal.SIGINT, signal.SIGTERM, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else []))
_taken: list[int] | None = None  # the signals taken while a hold is in force (None: none is)
_handlers: dict[int, Any] = {}  # the handlers that the hold in force stands in for


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGUSR2 until the block ends, then deliver them.

    For short calls that an interrupt would leave in a bad state: inside an MLflow call, SQLAlchemy
    logs it as a database error with a traceback before passing it on; between an epoch's report and
    its checkpoint, a requeued job would train the epoch again and report it twice. Within a hold,
    another one does nothing: the outermost delivers. A signal whose handler is not Python's (one that
    C code set, which could not be put back) is not held.
    """
    global _taken, _handlers
    if threading.current_thread() is not threading.main_thread() or _taken is not None:
        yield  # only the main thread receives signals
        return
    _taken = []
    _handlers = {number: signal.signal(number, _take) for number in HELD if signal.getsignal(number) is not None}
    try:
        yield
    finally:
        taken, _taken = _taken, None
        for number, handler in _handlers.items():
            signal.signal(number, handler)
        for number in taken[:1]:
            signal.raise_signal(number)


def _take(number: int, _frame: Any) -> None:
    _taken.append(number)


@contextlib.contextmanager
def interrupts_let_through() -> Iterator[None]:
    """Within a hold, deliver the held signals during the block, one that was held at once: for waits
    that an interrupt should cut short, such as the pauses between the tries of a store that is down."""
    if _taken is None or threading.current_thread() is not threading.main_thread():
        yield  # no hold: they are delivered anyway
        return
    for number, handler in _handlers.items():
        signal.signal(number, handler)
    try:
        if _taken:
            number = _taken[0]
            _taken.clear()  # delivered here, not again when the hold ends
            signal.raise_signal(number)
        yield
    finally:
        for number in _handlers:
            signal.signal(number, _take)
