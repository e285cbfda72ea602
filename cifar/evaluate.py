"""``python -m cifar.evaluate``: score a trained model on a labelled CIFAR-10 set: its accuracy, each class's,
and which class each is most often taken for.

    python -m cifar.evaluate --model outputs/2026-11-23/10-00-00/best.pt      # the test set of data/raw
    python -m cifar.evaluate --model RUN_ID --data ../cifar10-jpeg.tar.gz
    python -m cifar.evaluate --model multirun/2026-11-23/10-00-00 --split train --json

``--data`` takes any source that ``data.path`` does (the official batches or archive, image folders,
a .tar.gz or .zip of them, a prepared .npz), decoded once into ``--cache-dir`` as in training; it is
never downloaded. ``--model`` takes what ``cifar.predict`` does. The model classifies the split's
images as they are decoded, with its run's normalisation and TTA, as ``cifar.predict`` would their
files. ``--json`` prints one object with the confusion matrix (rows: true class; columns: predicted).
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


def to_markdown(result: Score) -> str:
    lines = [f"accuracy  {result.correct / result.images:.2%} ({result.correct} of {result.images} images)", "",
             "| class | accuracy | images | most often taken for |", "|---|---:|---:|---|"]
    for i, (cls, accuracy) in enumerate(zip(CLASSES, result.class_accuracy())):
        row = result.confusion[i]
        others = [j for j in np.argsort(-row, kind="stable") if j != i and row[j]]
        taken_for = f"{CLASSES[others[0]]} ({row[others[0]] / row.sum():.2%})" if others else ""
        shown = "" if np.isnan(accuracy) else f"{accuracy:.2%}"
        lines.append(f"| {cls} | {shown} | {row.sum()} | {taken_for} |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--data", default="data/raw", metavar="PATH",
                        help="the labelled images, in any layout data.path takes (default: data/raw)")
    parser.add_argument("--cache-dir", default="data/processed", help="where the decoded data is cached "
                                                                      "(default: data/processed, as in training)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test (default), or train: every training image, the validation hold-out included")
    parser.add_argument("--json", action="store_true", help="one JSON object, with the confusion matrix")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    from cifar.data import load_cifar10  # torch: imported once the arguments are valid
    from cifar.device import default_eval_batch_size

    try:  # the model first: a wrong one is said before a new source is decoded
        model, device = load_on_device(args.model, args.tracking_uri, args.device)
        data = load_cifar10(args.data, args.cache_dir, download=False, setting="--data")
    except UserError as err:
        print(f"cifar.evaluate: error: {err}", file=sys.stderr)
        return 2
    images, labels = (data.test_images, data.test_labels) if args.split == "test" else (
        data.train_images, data.train_labels)
    result = score(model, images, labels, args.batch_size or default_eval_batch_size(device), device)
    source = {"model": args.model, "data": args.data, "split": args.split, "data_hash": data.content_hash}
    if args.json:
        print(json.dumps({**source, **result.as_dict()}))
    else:
        print(f"model     {args.model}\ndata      {args.data} ({args.split} split, content hash "
              f"{data.content_hash[:12]})\n{to_markdown(result)}", end="")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
