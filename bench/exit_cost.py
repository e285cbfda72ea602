"""What a run and a tool spend after their last line, exiting: with Python's garbage collections at exit left
out (``cifar.errors.skip_collection_at_exit``, as the commands are) and with them ("collected": the same
command with ``gc.freeze`` made a no-op, as before).

Each command runs in a fresh process, both ways in turn, ``--repeats`` times, into fresh dirs:

- run: ``python -m cifar.train`` on the test suite's fake data (200 training images, 2 epochs, the model
  logged to MLflow as by default), into a fresh MLflow store;
- evaluate: ``python -m cifar.evaluate`` of that run's ``best.pt`` on the fake test set.

It prints the medians of the wall time and of the seconds between the command's last line and its exit.

    uv run python bench/exit_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import fakedata  # noqa: E402
from tests.conftest import train_command  # noqa: E402

SKIPPED = "skipped"
COLLECTED = "collected"
CHILD_FLAG = "--collected-child"  # this script, as the command with Python's collections at exit


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``args``; its wall seconds and the seconds from its last line of output to its exit."""
    start = last_line = time.perf_counter()
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for _ in proc.stdout:
            last_line = time.perf_counter()
        if proc.wait() != 0:
            sys.exit(f"exit_cost: {' '.join(args)} failed with status {proc.returncode}")
    end = time.perf_counter()
    return end - start, end - last_line


def commands(way: str, data: Path, workdir: Path) -> dict[str, list[str]]:
    """The commands to time, as ``way`` runs them."""
    run = train_command(data, workdir, "mlflow.log_model=true")
    evaluate = [sys.executable, "-m", "cifar.evaluate", "--model", str(workdir / "run" / "best.pt"),
                "--data", str(data)]
    if way == COLLECTED:  # python -m MODULE ... -> python exit_cost.py --collected-child MODULE ...
        run, evaluate = ([sys.executable, __file__, CHILD_FLAG, *command[2:]] for command in (run, evaluate))
    return {"run": run, "evaluate": evaluate}


def run_collected(module: str, args: list[str]) -> None:
    """``python -m module args`` in this process, with the collections at exit that it would skip."""
    gc.freeze = lambda: None
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main() -> None:
    if sys.argv[1:2] == [CHILD_FLAG]:
        run_collected(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = fakedata.write_official(tmp / "data")
        for repeat in range(args.repeats):
            for way in (SKIPPED, COLLECTED):
                workdir = tmp / f"{way}-{repeat}"
                workdir.mkdir()
                env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
                for name, command in commands(way, data, workdir).items():
                    times.setdefault((name, way), []).append(timed(command, workdir, env))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)

    print(f"Medians of {args.repeats} interleaved repeats, seconds (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print(f"| command | wall, {SKIPPED} | wall, {COLLECTED} | ratio | exit, {SKIPPED} | exit, {COLLECTED} | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("run", "evaluate"):
        cells = []
        for measure in (0, 1):
            skipped, collected = (statistics.median(t[measure] for t in times[(name, way)])
                                  for way in (SKIPPED, COLLECTED))
            cells.append(f"{skipped:.2f} | {collected:.2f} | {collected / skipped:.2f}x")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
