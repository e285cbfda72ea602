"""What Python's garbage collections cost a run, a sweep and a tool: with the collections that their imports set
off and those at exit left out (``cifar.collector``, as the commands are) and kept (the same command, with
``gc.disable`` and ``gc.freeze`` made no-ops in each of its processes by a ``sitecustomize``).

Each command runs in fresh processes, both ways in turn, ``--repeats`` times, into fresh dirs:

- imports: ``import_for_good("cifar.task", "torch._dynamo")``, what a run imports before its first epoch;
- run: ``python -m cifar.train`` on the test suite's fake data (200 training images, 2 epochs, the model
  logged to MLflow as by default), into a fresh MLflow store;
- joblib sweep: the same, ``-m seed=0,1`` with ``hydra/launcher=joblib hydra.launcher.n_jobs=2``: two
  worker processes, which import for their first job and exit with the sweep;
- evaluate: ``python -m cifar.evaluate`` of the run's ``best.pt`` on the fake test set.

It prints the medians of three measures: the wall time; the seconds to the command's first line, which
the imports command prints once imported and a run once it has imported and read the data (a sweep's and
evaluate's say little); the seconds from its last line to its exit.

    uv run python bench/collector_cost.py --repeats 5
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

LEFT_OUT, KEPT = "left out", "kept"
MEASURES = ("wall", "to the first line", "from the last line to the exit")
# sitecustomize.py, which each Python process runs as it starts
COLLECTIONS_KEPT = "import gc\ngc.disable = gc.freeze = lambda: None\n"


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``args``; the seconds of each of MEASURES."""
    start = time.perf_counter()
    lines = []
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for _ in proc.stdout:
            lines.append(time.perf_counter())
        if proc.wait() != 0:
            sys.exit(f"collector_cost: {' '.join(args)} failed with status {proc.returncode}")
    end = time.perf_counter()
    return end - start, lines[0] - start, end - lines[-1]


def commands(data: Path, workdir: Path) -> dict[str, list[str]]:
    """The commands to time, in this order (evaluate scores the run's model)."""
    return {
        "imports": [sys.executable, "-c", 'from cifar.collector import import_for_good; '
                    'import_for_good("cifar.task", "torch._dynamo"); print("imported")'],
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
    times: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = fakedata.write_official(tmp / "data")
        hook = tmp / "collections-kept"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(COLLECTIONS_KEPT)
        for repeat in range(args.repeats):
            for way in (LEFT_OUT, KEPT):
                workdir = tmp / f"{way.replace(' ', '-')}-{repeat}"
                workdir.mkdir()
                path = [str(REPO), *([str(hook)] if way == KEPT else []), os.environ.get("PYTHONPATH")]
                env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                       "PYTHONPATH": os.pathsep.join(filter(None, path))}
                for name, command in commands(data, workdir).items():
                    times.setdefault((name, way), []).append(timed(command, workdir, env))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)

    print(f"Medians of {args.repeats} interleaved repeats, seconds (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print(f"| command | seconds | collections {LEFT_OUT} | collections {KEPT} | ratio |")
    print("|---|---|---:|---:|---:|")
    for name in commands(data, tmp):
        for index, measure in enumerate(MEASURES):
            left_out, kept = (statistics.median(t[index] for t in times[(name, way)]) for way in (LEFT_OUT, KEPT))
            print(f"| {name} | {measure} | {left_out:.2f} | {kept:.2f} | {kept / left_out:.2f}x |")


if __name__ == "__main__":
    main()
