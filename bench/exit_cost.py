"""What a run, a sweep and a tool spend after their last line, exiting: with Python's garbage collections at
exit left out (``cifar.errors.skip_collection_at_exit``, as the commands are) and with them ("collected": the
same command, with ``gc.freeze`` made a no-op in each of its processes by a ``sitecustomize`` module).

Each command runs in fresh processes, both ways in turn, ``--repeats`` times, into fresh dirs:

- run: ``python -m cifar.train`` on the test suite's fake data (200 training images, 2 epochs, the model
  logged to MLflow as by default), into a fresh MLflow store;
- joblib sweep: the same, ``-m seed=0,1`` with ``hydra/launcher=joblib hydra.launcher.n_jobs=2``: two
  worker processes, which exit with the sweep;
- evaluate: ``python -m cifar.evaluate`` of the run's ``best.pt`` on the fake test set.

It prints the medians of the wall time and of the seconds between the command's last line and its exit.

    uv run python bench/exit_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
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

WAYS = ("skipped", "collected")
COLLECTED_HOOK = "import gc\ngc.freeze = lambda: None\n"  # sitecustomize.py: run by each Python process at start


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


def commands(data: Path, workdir: Path) -> dict[str, list[str]]:
    """The commands to time, in this order (evaluate scores the run's model)."""
    return {
        "run": train_command(data, workdir, "mlflow.log_model=true"),
        "joblib sweep": train_command(data, workdir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
                                      multirun=True),
        "evaluate": [sys.executable, "-m", "cifar.evaluate", "--model", str(workdir / "run" / "best.pt"),
                     "--data", str(data)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = fakedata.write_official(tmp / "data")
        hook = tmp / "collected-hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(COLLECTED_HOOK)
        for repeat in range(args.repeats):
            for way in WAYS:
                workdir = tmp / f"{way}-{repeat}"
                workdir.mkdir()
                path = [str(REPO), *([str(hook)] if way == "collected" else []), os.environ.get("PYTHONPATH")]
                env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                       "PYTHONPATH": os.pathsep.join(filter(None, path))}
                for name, command in commands(data, workdir).items():
                    times.setdefault((name, way), []).append(timed(command, workdir, env))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)

    print(f"Medians of {args.repeats} interleaved repeats, seconds (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print("| command | wall, skipped | wall, collected | ratio | exit, skipped | exit, collected | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in commands(data, tmp):
        cells = []
        for measure in (0, 1):
            skipped, collected = (statistics.median(t[measure] for t in times[(name, way)]) for way in WAYS)
            cells.append(f"{skipped:.2f} | {collected:.2f} | {collected / skipped:.2f}x")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
