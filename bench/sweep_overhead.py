"""Sweep overhead: what an Optuna sweep costs beyond the training of its trials.

Runs an 8-trial sweep of tiny trials (the fake-data test set, 1 epoch each) with the basic
launcher and with the joblib launcher (2 workers), interleaved and repeated, each into a fresh
MLflow store, and reads the timings back from MLflow:

- command:  wall time of ``python -m cifar.train -m ...`` (includes interpreter start and imports);
- sweep:    the sweep's parent run, from the sweeper's start to its end;
- training: the sum over trials of their epochs' time (train + validation), ``epoch_seconds``;
- overhead/trial = (sweep - training) / trials. This spreads one-time costs over the 8 trials:
  the first job's imports (torch, and torch._dynamo, which the first optimizer imports) and the
  study's summary and plots at the end;
- steady overhead/trial: the same once the sweep runs, without those one-time costs: the median
  over batches of trials but the first and last of (next batch's start - this batch's start -
  its longest training) / trials per batch (1 for the basic launcher, 2 for joblib x2).

    uv run python bench/sweep_overhead.py --repeats 3
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
from tests.conftest import FAST, with_overrides  # noqa: E402

TRIALS = 8
# The CLI tests' tiny runs, for 1 epoch, logging their model as the defaults do
TINY_TRIAL = with_overrides(FAST, ("trainer.epochs=1", "mlflow.log_model=true"))
LAUNCHERS = {  # name: (overrides, trials run at once)
    "basic": ([], 1),
    "joblib x2": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"], 2),
}


def run_sweep(
    data: Path, workdir: Path, launcher_overrides: list[str], workers: int, extra: list[str]
) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    args = [
        sys.executable, "-m", "cifar.train", "-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={TRIALS}",
        "hydra/sweeper/pruner=none", f"data.path={data}", f"data.cache_dir={data.parent / 'cache'}",
        f"hydra.sweep.dir={workdir / 'sweep'}", *launcher_overrides, *with_overrides(TINY_TRIAL, tuple(extra)),
    ]
    start = time.perf_counter()
    subprocess.run(args, cwd=workdir, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, check=True,
                   capture_output=True)
    command = time.perf_counter() - start
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert len(children) == TRIALS, f"{len(children)} runs for {TRIALS} trials"

    def seconds(run) -> float:
        return (run.info.end_time - run.info.start_time) / 1000

    def training(run) -> float:
        return sum(m.value for m in client.get_metric_history(run.info.run_id, "epoch_seconds"))

    children.sort(key=lambda r: r.info.start_time)
    trained = [training(c) for c in children]
    batches = [range(i, i + workers) for i in range(0, TRIALS, workers)]
    steady = [
        ((children[b[0] + workers].info.start_time - children[b[0]].info.start_time) / 1000
         - max(trained[i] for i in b)) / workers
        for b in batches[1:-1]
    ]
    return {
        "command": command,
        "sweep": seconds(parent),
        "training": sum(trained),
        "overhead/trial": (seconds(parent) - sum(trained)) / TRIALS,
        "steady overhead/trial": statistics.median(steady),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = fakedata.write_official(Path(tmp) / "data")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in LAUNCHERS}
        for repeat in range(args.repeats):
            for name, (overrides, workers) in LAUNCHERS.items():
                workdir = Path(tmp) / f"{name.replace(' ', '_')}-{repeat}"
                workdir.mkdir()
                results[name].append(run_sweep(data, workdir, overrides, workers, args.overrides))
                print(f"{name} #{repeat + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in results[name][-1].items()),
                      flush=True)
    print(f"\nMedians of {args.repeats} sweeps of {TRIALS} trials (seconds):")
    keys = list(next(iter(results.values()))[0])
    print("| launcher | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join(f"{statistics.median(r[k] for r in rows):.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
