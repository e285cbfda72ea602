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
# How far a live process's start time may have moved since its owner was written: psutil adds the boot time, which
# /proc/stat gives in whole seconds, as the system clock has it now (psutil#2541), so a clock that NTP set a fraction
# of a second moves every start time by 1 s. A pid taken again within 2 s of the start of the process that had it
# would take as many new processes as there are pids (32,768 where pid_max is Linux's default).
CLOCK_SLACK_S = 2.0


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
        number, started_at = int(pid), float(started)
    except ValueError:
        return False  # not an owner this module wrote
    if host != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(number).create_time() - started_at) > CLOCK_SLACK_S
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # a process this user may not inspect: alive
