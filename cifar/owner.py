"""The process that owns a RUNNING MLflow run or Optuna trial, and whether it is gone.

A run or trial records its owner as ``host:pid:start time``. When a sweep or run starts, the
RUNNING runs and trials whose owner ran on this machine and no longer runs (killed with -9,
or the machine's power cut) are closed as KILLED / FAIL. Owners on other machines are left
alone: their processes cannot be seen from here, unless something that knows declares them gone
(Ray runs a task again only once the process of its first attempt is lost).
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path

import psutil


@functools.cache
def current() -> str:
    pid = os.getpid()
    started = _since_boot(pid) if sys.platform.startswith("linux") else f"{psutil.Process(pid).create_time():.2f}"
    return f"{socket.gethostname()}:{pid}:{started}"


def _since_boot(pid: int) -> str:
    """When process ``pid`` started, as ``<boot id>+<seconds since boot>``: Linux counts it in clock ticks since boot,
    which no setting of the system clock moves. psutil's create_time adds the boot time as the clock has it now
    (psutil#2541), so a clock set by NTP, or a virtual machine's clock set on resume, moves every start time."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()  # FileNotFoundError: no such process
    ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # field 22, starttime; the name before it may hold spaces
    return f"{_boot_id()}+{ticks / os.sysconf('SC_CLK_TCK'):.2f}"


BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def _boot_id() -> str:
    """The first 8 characters of the id that Linux draws at each boot, or '' where a kernel gives none (WSL before
    2018, some sandboxes)."""
    try:
        return BOOT_ID_FILE.read_text()[:8]
    except OSError:
        return ""


_declared_gone: set[str] = set()
# How far a live process's start time, written as seconds since the epoch (elsewhere than Linux, or by a version of this
# module before the boot form), may be off the one psutil gives now, for the reason :func:`_since_boot` gives. A pid
# taken again within 2 s of the start of the process that had it would take as many new processes as there are pids
# (32,768 where pid_max is Linux's default).
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
        number = int(pid)
        started_at = None if "+" in started else float(started)  # None: the boot form (Linux)
    except ValueError:
        return False  # not an owner this module wrote
    if host != socket.gethostname():
        return False
    try:
        if started_at is None:
            return _since_boot(number) != started  # another boot id: the machine restarted since
        return abs(psutil.Process(number).create_time() - started_at) > CLOCK_SLACK_S
    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
        return True
    except (psutil.Error, OSError):
        return False  # a process this user may not inspect: alive
