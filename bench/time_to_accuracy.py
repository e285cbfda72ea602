"""Time to accuracy: a recipe trained for several seeds, with test accuracy and training seconds.

Runs ``python -m cifar.train -m seed=K,...,K+N-1 [experiment=PRESET] OVERRIDES`` (K is
``--first-seed``, 0 by default) as one sweep into a fresh MLflow store and reads each seed's run
back: ``test/acc``, ``train_seconds`` (time in training steps, including the in-batch augmentation;
excluding data loading, validation, testing and, where ``trainer.compile`` is on, the warm-up that
compiles the model before the first epoch), ``warmup_seconds`` (that warm-up) and run seconds (the
MLflow run's wall time: warm-up, training, validation, testing and logging metrics; the runs log no
model, which takes MLflow about 10 s).
It prints one row per seed and the mean and standard deviation.

With ``--classic-images N`` it also measures the classic lab pipeline (``bench/throughput.py``:
PIL transforms and a DataLoader) on the recipe's model and batch size for N images, and gives the
time the classic pipeline would take for the same training images, and the ratio.

    uv run python bench/time_to_accuracy.py --seeds 5                          # the default recipe
    uv run python bench/time_to_accuracy.py --preset fast --seeds 5 --classic-images 6400
    uv run python bench/time_to_accuracy.py --preset fast --seeds 3 trainer.epochs=8
    uv run python bench/time_to_accuracy.py --preset fast --seeds 3 --first-seed 5   # seeds 5, 6 and 7
    python bench/time_to_accuracy.py --preset resnet9_fast --seeds 5 --data data/processed/cifar10.npz  # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


# What a timed run leaves out: a download, the plots, the logged model (about 10 s), the progress bar
QUIET = ["data.download=false", "mlflow.log_plots=false", "mlflow.log_model=false", "trainer.progress=false"]


def train_into_store(workdir: Path, entry: list[str], overrides: list[str]) -> tuple[Any, list[str]]:
    """Run ``python ENTRY QUIET OVERRIDES`` (``entry``: ``-m cifar.train``, or a script that runs it) in the
    repository, into the MLflow store in ``workdir`` (made by the first call, and the benchmark's alone); that
    store's client and its experiments' ids (``cifar``'s, or the one that ``mlflow.experiment``, ``debug=smoke`` or
    an ``experiment=`` preset chose). The experiment keeps its runs' files in ``workdir`` too: by default,
    MLflow's, they went to the repository's ``mlruns``, among those of one's own runs, and stayed there once the
    store was deleted."""
    from mlflow.tracking import MlflowClient

    from cifar.config import compose

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    naming = [o for o in overrides if o.startswith(("debug=", "experiment=", "mlflow.experiment="))]
    name = compose(naming).mlflow.experiment
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, (workdir / "mlruns").as_uri())
    trained = subprocess.run([sys.executable, *entry, *QUIET, *overrides], cwd=REPO,
                             env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    if trained.returncode:  # the command said why in its own line
        sys.exit(trained.returncode)
    return client, [experiment.experiment_id for experiment in client.search_experiments()]


def train_seeds(preset: str | None, seeds: range, data: str, workdir: Path, overrides: list[str]) -> list[dict]:
    """Run the sweep over seeds; one dict per run: seed, test acc, train and run seconds, images/s, params."""
    client, experiments = train_into_store(workdir, ["-m", "cifar.train", "-m"], [
        f"seed={','.join(map(str, seeds))}", *([f"experiment={preset}"] if preset else []), f"data.path={data}",
        f"hydra.sweep.dir={workdir / 'sweep'}", *overrides,
    ])
    runs = client.search_runs(experiments, filter_string="tags.mlflow.parentRunId != ''")
    rows = []
    for run in runs:
        speeds = [m.value for m in client.get_metric_history(run.info.run_id, "train/images_per_s")]
        rows.append({
            "seed": int(run.data.params["seed"]),
            "test_acc": run.data.metrics["test/acc"],
            "train_seconds": run.data.metrics["train_seconds"],
            "warmup_seconds": run.data.metrics["warmup_seconds"],
            "run_seconds": (run.info.end_time - run.info.start_time) / 1000,
            "images_per_s": statistics.median(speeds),
            "params": run.data.params,
        })
    return sorted(rows, key=lambda r: r["seed"])


def classic_images_per_s(params: dict, data: str, n_images: int) -> float:
    """The classic pipeline's training images/s for the run's model (in the labs' layer order) and batch size."""
    import torch
    import yaml
    from omegaconf import OmegaConf

    from cifar.data import load_cifar10
    from cifar.models import build_model, relu_before_pool
    from throughput import classic

    model_cfg = OmegaConf.create(
        {key.removeprefix("model."): yaml.safe_load(value) for key, value in params.items() if key.startswith("model.")}
    )
    loaded = load_cifar10(data, str(REPO / "data" / "processed"), download=False)
    torch.manual_seed(0)
    return classic(loaded.train_images[:n_images], loaded.train_labels[:n_images], loaded.mean, loaded.std,
                   batch=int(params["data.batch_size"]), model=relu_before_pool(build_model(model_cfg)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="an option of conf/experiment (default: the default recipe)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed (default 0): more seeds for a recipe already measured")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    parser.add_argument("--classic-images", type=int, default=0,
                        help="images to time the classic pipeline on (0: no classic comparison)")
    parser.add_argument("overrides", nargs="*", help="more overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        rows = train_seeds(args.preset, seeds, args.data, Path(tmp), args.overrides)
    recipe = " ".join([f"experiment={args.preset}" if args.preset else "(defaults)", *args.overrides])
    params, epochs = rows[0]["params"], int(rows[0]["params"]["trainer.epochs"])
    print(f"\n{recipe}: {len(rows)} seed{'s' * (len(rows) != 1)}, {epochs} epoch{'s' * (epochs != 1)}, "
          f"model {params['model.name']}, batch {params['data.batch_size']}\n")
    print("| seed | test acc | train seconds | warm-up seconds | run seconds | images/s |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['test_acc']:.2%} | {r['train_seconds']:.1f} | {r['warmup_seconds']:.1f} "
              f"| {r['run_seconds']:.1f} | {r['images_per_s']:.0f} |")
    columns = ("test_acc", "train_seconds", "warmup_seconds", "run_seconds")
    accs, secs, warmups, run_secs = ([r[key] for r in rows] for key in columns)
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    print(f"| mean ± std | {statistics.mean(accs):.2%} ± {spread(accs):.2%} | "
          f"{statistics.mean(secs):.1f} ± {spread(secs):.1f} | {statistics.mean(warmups):.1f} | "
          f"{statistics.mean(run_secs):.1f} ± {spread(run_secs):.1f} | |")
    if args.classic_images:
        classic = classic_images_per_s(rows[0]["params"], args.data, args.classic_images)
        ours = statistics.median(r["images_per_s"] for r in rows)
        print(f"\nclassic pipeline: {classic:.0f} images/s on {args.classic_images} images, so "
              f"{statistics.mean(secs) * ours / classic:.1f} s for the same training images; "
              f"this recipe is {ours / classic:.2f}x faster")


if __name__ == "__main__":
    main()
