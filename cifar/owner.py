"""The process that owns a RUNNING MLflow run or Optuna trial, and whether it is gone.

A run or trial records its owner as ``host:pid:start time``. When a sweep or run starts, the
RUNNING runs and trials whose owner ran on this machine and no longer runs (killed with -9,
or the machine's power cut) are closed as KILLED / FAIL. Owners on other machines are left
alone: their processes cannot be seen from here, unless something that knows declares them gone
(Ray runs a task again only once the process of its first attempt is lost).
"""

from __future__ import annotations

import functools
import socket

import psutil


@functools.cache
def current() -> str:
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


_declared_gone: set[str] = set()


def declare_gone(owner: str) -> None:
    """Have :func:`is_gone` say True of ``owner``, wherever it ran."""
    _declared_gone.add(owner)


def is_gone(owner: str) -> bool:
    """True when ``owner`` was declared gone, or ran on this machine and its process no longer runs (a reused
    pid included)."""
    if owner in _declared_gone:
        return True
    try:
        host, pid, started = owner.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return False  # not an owner this module wrote
    if host != socket.gethostname():
        return False
    try:
        return f"{psutil.Process(number).create_time():.2f}" != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # a process this user may not inspect: alive
