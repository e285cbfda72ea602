"""Python's garbage collector, kept off the objects that live as long as the process: those of the modules that a
run imports (torch's, MLflow's: about 800,000), and all of them at exit.

Python's collections go over every object that may be in a reference cycle. Imports make them by the hundred
thousand, and set off collections that go over them again and again; at exit, Python collects them all once
more. On a 2-core machine that was 1.5 s of a run's start and 2 s of its end (bench/collector_cost.py).
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import sys


def import_for_good(*names: str) -> None:
    """Import the modules ``names`` that this process has not imported yet, without the collections that
    importing sets off, and leave what they made out of later collections (``gc.freeze``).

    The garbage the process held before is collected first (cheap before torch's imports), so that what is
    left out is the imports' own: their modules, and the reference cycles they dropped, about 14 MB for a
    run's, which stay until the process exits. Where all are imported it does nothing: the next jobs of a
    process freeze nothing, which would keep the garbage of the jobs before.
    """
    if all(name in sys.modules for name in names):
        return
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@functools.cache  # once a process
def skip_collection_at_exit() -> None:
    """Leave the objects of this process out of Python's garbage collections at its exit.

    Nothing is lost: files are closed and flushed by their owners and by the exit handlers (this is one),
    which all still run, and the memory goes back to the system with the process.
    """
    atexit.register(gc.freeze)
