"""Python's garbage collector kept off what lives as long as the process (``cifar.collector``), each case in a
fresh Python process: the collector's state is the process's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A module whose import makes 200,000 objects in reference cycles, as torch's and MLflow's do by the hundred
# thousand: enough to set off collections. It counts those that ran while it was imported.
HEAVY_MODULE = """\
import gc

def _collections():
    return sum(generation["collections"] for generation in gc.get_stats())

_before = _collections()
NODES = []
for _ in range(100_000):
    node = {}
    node["self"] = node
    NODES.append([node])
COLLECTIONS_WHILE_IMPORTED = _collections() - _before
"""


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    """``python -c code`` (dedented) in a fresh process, in ``cwd``."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_modules_imported_for_good_set_off_no_collection_and_are_left_out_of_later_ones(tmp_path):
    (tmp_path / "heavy.py").write_text(HEAVY_MODULE)
    (tmp_path / "heavy_too.py").write_text(HEAVY_MODULE)
    proc = run_python("""
        import gc, weakref
        from cifar.collector import import_for_good

        import heavy_too  # as usual

        class Garbage: pass
        cycle = Garbage(); cycle.itself = cycle
        collected_first = weakref.ref(cycle)
        del cycle
        import_for_good("heavy")
        import heavy
        frozen = gc.get_freeze_count()
        made_since = [[] for _ in range(1000)]
        import_for_good("heavy")  # imported already: nothing is frozen again
        print(heavy_too.COLLECTIONS_WHILE_IMPORTED, heavy.COLLECTIONS_WHILE_IMPORTED, collected_first() is None,
              gc.isenabled(), frozen, gc.get_freeze_count() == frozen)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    collections_plain, collections_for_good, collected_first, enabled, frozen, frozen_once = proc.stdout.split()
    assert int(collections_plain) > 0  # the module sets off collections where it is imported as usual
    assert int(collections_for_good) == 0
    assert collected_first == "True"  # the garbage from before was collected, not left out with the imports
    assert enabled == "True" and int(frozen) > 200_000 and frozen_once == "True"


@pytest.mark.parametrize("command", [["cifar.train", "trainer.epochs=0"], ["cifar.prepare", "nowhere", "out"]])
def test_a_command_leaves_its_objects_out_of_the_collections_at_exit(command, tmp_path):
    """Python's collections at exit would go over every object that torch and MLflow made: 2 s of each run's end
    (bench/collector_cost.py). An exit handler that runs after the command's own end counts the objects left out."""
    module = command[0]
    proc = run_python(f"""
        import atexit, gc, runpy, sys
        atexit.register(lambda: print("left out:", gc.get_freeze_count()))
        sys.argv = {command!r}
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """, tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"{module}: error: "), proc.stderr
    assert int(proc.stdout.split("left out:")[-1]) > 1000
