"""``python -m cifar.evaluate``: score trained models on a labelled CIFAR-10 set: their accuracy and each
class's, side by side; for one model, also the class each is most often taken for.

    python -m cifar.evaluate --model outputs/2026-11-23/10-00-00/best.pt      # the test set of data/raw
    python -m cifar.evaluate --model RUN_ID --data ../cifar10-jpeg.tar.gz
    python -m cifar.evaluate --model multirun/2026-11-23/10-00-00 --split train --json
    python -m cifar.evaluate --model models:/cifar-simplecnn/1 --model models:/cifar-simplecnn/2

``--data`` takes any source that ``data.path`` does (the official batches or archive, image folders,
a .tar.gz or .zip of them, a prepared .npz), decoded once into ``--cache-dir`` as in training; it is
never downloaded. ``--model`` takes what ``cifar.predict`` does. The model classifies the split's
images as they are decoded, with its run's normalisation and TTA, as ``cifar.predict`` would their
files. A model given by a run id or a sweep is named by the MLflow run that trained it too (``run_name``
in ``--json``). ``--json`` prints one object a model, a line each, with its confusion matrix (rows: true
class; columns: predicted).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cifar.data import CLASSES
from cifar.errors import UserError, exit_status
from cifar.predict import add_model_arguments, load_on_device

SPLITS = ("test", "train")


@dataclass
class Score:
    confusion: np.ndarray  # (10, 10) counts: rows the true class, columns the predicted one

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    def class_accuracy(self) -> np.ndarray:
        """Each class's share of its images classified as it (NaN for a class with no image)."""
        with np.errstate(invalid="ignore"):
            return np.diag(self.confusion) / self.confusion.sum(axis=1)

    def as_dict(self) -> dict:
        return {"images": self.images, "accuracy": self.correct / self.images,
                "class_accuracy": {c: _number(a) for c, a in zip(CLASSES, self.class_accuracy())},
                "classes": list(CLASSES), "confusion": self.confusion.tolist()}


def score(model, images: np.ndarray, labels: np.ndarray, batch_size: int, device) -> Score:
    """The confusion matrix of ``model`` (a classifier of uint8 NHWC images) on ``images``."""
    import torch

    predicted = np.empty(len(images), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            predicted[start:start + len(batch)] = model(batch).argmax(1).cpu().numpy()
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return Score(confusion)


def to_markdown(results: list[Score]) -> str:
    """A row of every image, then one a class: the images, and each model's accuracy on them, a column each; with
    one model, the class each is most often taken for."""
    one = len(results) == 1
    models = ["accuracy"] if one else [f"model {n}" for n in range(1, len(results) + 1)]
    taken_for = ["most often taken for"] if one else []
    lines = [_cells(["class", "images", *models, *taken_for]), "|---|---:|" + "---:|" * len(results) + "---|" * one,
             _cells(["all", str(results[0].images), *(f"{r.correct / r.images:.2%}" for r in results), *[""] * one])]
    accuracies = np.array([r.class_accuracy() for r in results])  # (model, class)
    for i, cls in enumerate(CLASSES):
        row = results[0].confusion[i]
        shown = ["" if np.isnan(a) else f"{a:.2%}" for a in accuracies[:, i]]
        lines.append(_cells([cls, str(row.sum()), *shown, *([_taken_for(row, i)] if one else [])]))
    return "\n".join(lines) + "\n"


def _cells(cells: list[str]) -> str:
    return f"| {' | '.join(cells)} |"


def _taken_for(row: np.ndarray, true_class: int) -> str:
    """The class that a class's images (``row`` of the confusion matrix) are most often taken for, and how often."""
    others = [j for j in np.argsort(-row, kind="stable") if j != true_class and row[j]]
    return f"{CLASSES[others[0]]} ({row[others[0]] / row.sum():.2%})" if others else ""


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, several=True)
    parser.add_argument("--data", default="data/raw", metavar="PATH",
                        help="the labelled images, in any layout data.path takes (default: data/raw)")
    parser.add_argument("--cache-dir", default="data/processed", help="where the decoded data is cached "
                                                                      "(default: data/processed, as in training)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test (default), or train: every training image, the validation hold-out included")
    parser.add_argument("--json", action="store_true", help="one JSON object a model, with its confusion matrix")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    from cifar.data import load_cifar10  # torch: imported once the arguments are valid
    from cifar.device import default_eval_batch_size
    from cifar.inference import trained_by

    try:  # the models first: a wrong one is said before a new source is decoded
        models = [load_on_device(source, args.tracking_uri, args.device) for source in args.model]
        data = load_cifar10(args.data, args.cache_dir, download=False, setting="--data")
    except UserError as err:
        print(f"cifar.evaluate: error: {err}", file=sys.stderr)
        return 2
    images, labels = (data.test_images, data.test_labels) if args.split == "test" else (
        data.train_images, data.train_labels)
    results = [score(model, images, labels, args.batch_size or default_eval_batch_size(device), device)
               for model, device in models]
    run_names = [trained_by(source, args.tracking_uri) for source in args.model]
    if args.json:
        for source, run_name, result in zip(args.model, run_names, results):
            print(json.dumps({"model": source, "run_name": run_name, "data": args.data, "split": args.split,
                              "data_hash": data.content_hash, **result.as_dict()}))
        return 0
    headings = ["model"] if len(args.model) == 1 else [f"model {n}" for n in range(1, len(args.model) + 1)]
    for heading, source, run_name in zip(headings, args.model, run_names):
        print(f"{heading:<9} {source}" + (f" (MLflow run {run_name!r})" if run_name else ""))
    print(f"data      {args.data} ({args.split} split, content hash {data.content_hash[:12]})\n")
    print(to_markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
