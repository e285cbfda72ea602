"""What the optional logging costs a run: diagnostics at a chosen epoch, and the MLflow model at the end.

For simplecnn and resnet18 (random weights, a backward pass done so that there are gradients),
times, into a throwaway MLflow store:
- ``Diagnostics.log`` for one epoch: the four PNGs over a 5,000-image validation pass's predictions;
- ``registry.log_model``: the best.pt's classifier exported (torch.export) and logged with its
  signature and input example. The first call in a process also imports torch.export; it is
  reported apart.
Medians of the repeats; set them beside the epoch times of the Speed section.

    uv run python bench/logging_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar import checkpoint, inference, registry  # noqa: E402
from cifar.diagnostics import Diagnostics  # noqa: E402
from cifar.engine import TTA, Evaluation  # noqa: E402
from cifar.models import build_model  # noqa: E402
from cifar.outages import Retrying  # noqa: E402

VAL_IMAGES = 5000
MODELS = {
    "simplecnn": {"name": "simplecnn", "channels": [32, 64, 128], "hidden": 256, "dropout": 0.5, "batch_norm": True},
    "resnet18": {"name": "resnet18"},
}
DIAGNOSTICS = OmegaConf.create({"epochs": [1], "gradient_flow": True, "weights": True, "predictions": True,
                                "per_class": True, "samples": 32})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import mlflow

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (VAL_IMAGES, 3, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, VAL_IMAGES))
    predictions = torch.from_numpy(rng.integers(0, 10, VAL_IMAGES))
    val = Evaluation(loss=2.0, acc=0.1, images=VAL_IMAGES, predictions=predictions)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("logging-cost", Path(tmp, "mlruns").as_uri()))
        first_export = None
        for name, cfg in MODELS.items():
            model = build_model(OmegaConf.create(cfg))
            model(torch.randn(8, 3, 32, 32)).sum().backward()
            best = Path(tmp) / f"{name}.pt"
            spec = inference.spec(OmegaConf.create(cfg), [0.5] * 3, [0.25] * 3, TTA())
            checkpoint.save(best, {"model": model.state_dict(), inference.SPEC: spec})
            diagnostics, exports = [], []
            store_calls = Retrying(0, mlflow.get_tracking_uri())  # a failure is the benchmark's to report
            with mlflow.start_run():
                for repeat in range(args.repeats + (first_export is None)):
                    start = time.perf_counter()
                    registry.log_model(best, images[:2].permute(0, 2, 3, 1).numpy())
                    seconds = time.perf_counter() - start
                    if first_export is None:
                        first_export = seconds
                        continue
                    exports.append(seconds)
                for repeat in range(args.repeats):
                    start = time.perf_counter()
                    Diagnostics(DIAGNOSTICS, images, labels, store_calls).log(1, model, val)
                    diagnostics.append(time.perf_counter() - start)
            rows.append((name, statistics.median(diagnostics), statistics.median(exports)))
    print(f"medians of {args.repeats}, {torch.get_num_threads()} threads; seconds:")
    print("| model | diagnostics, one epoch | log_model |\n|---|---:|---:|")
    for name, diagnostics_s, export_s in rows:
        print(f"| {name} | {diagnostics_s:.2f} | {export_s:.2f} |")
    print(f"first log_model in the process (imports torch.export): {first_export:.2f} s")


if __name__ == "__main__":
    main()
