"""``python -m cifar.evaluate``: score trained models on a labelled CIFAR-10 set, or on images of one's own
sorted into class folders: their accuracy and each class's, side by side; for one model, also the class each
is most often taken for.

    python -m cifar.evaluate --model outputs/2026-11-23/10-00-00/best.pt      # the test set it trained with
    python -m cifar.evaluate --model RUN_ID --data ../cifar10-jpeg.tar.gz
    python -m cifar.evaluate --model multirun/2026-11-23/10-00-00 --split train --json
    python -m cifar.evaluate --model models:/cifar-simplecnn/1 --model models:/cifar-simplecnn/2
    python -m cifar.evaluate --model RUN_ID --data my-photos/    # my-photos/cat/*.jpg, my-photos/dog/...

``--data`` takes any source that ``data.path`` does (the official batches or archive, image folders,
a .tar.gz or .zip of them, a prepared .npz), decoded once into ``--cache-dir`` as in training; it is
never downloaded; or a folder of images labelled by the class folders they are in (``<class>/``, or
``test/<class>/`` without a train/), or a .zip or .tar.gz of one, such as one's own photos: of any size,
and not every class, read as ``cifar.predict`` reads files and not cached. Without it, the models are scored
on the data they trained on, where their run dirs say which (:mod:`cifar.provenance`), else on data/raw.
``--model`` takes what ``cifar.predict`` does. The model classifies the split's images as they are decoded,
with its run's normalisation and TTA, as ``cifar.predict`` would their files. A model given by a run id, a sweep or a
``runs:/`` or ``models:/`` URI is named by the MLflow run that trained it too (``run_name`` in ``--json``).
Each model after the first is set against it on the images that only one of the two classifies right, with
McNemar's exact test (and, for two comparisons or more, its p-value adjusted by Holm's method). ``--json``
prints one object a model, a line each, with its confusion matrix (rows: true class; columns: predicted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cifar.data import CLASSES, NoLayoutError, content_hash, corrupt_exif_ignored, load_cifar10
from cifar.errors import UserError, exit_with_status_of, os_reason
from cifar.predict import Failure, add_model_arguments, image_files, load_on_device, read_images, unpacked
from cifar.significance import holm

if TYPE_CHECKING:
    from cifar.provenance import Provenance

SPLITS = ("test", "train")
DEFAULT_DATA = "data/raw"  # as data.path's default; where no model says what it trained on
DEFAULT_CACHE_DIR = "data/processed"


@dataclass
class Score:
    confusion: np.ndarray  # (10, 10) counts: rows the true class, columns the predicted one
    right: np.ndarray  # (images,) bool: each image classified as its class, in the split's order

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


def score(model, images: np.ndarray, labels: np.ndarray, batch_size: int, device, bar: str = "") -> Score:
    """The confusion matrix of ``model`` (a classifier of uint8 NHWC images) on ``images``, behind a live bar named
    ``bar`` where stderr is a terminal."""
    import torch

    from cifar.progress import Progress

    predicted = np.empty(len(images), dtype=np.int64)
    with torch.inference_mode(), Progress(len(images), bar, sys.stderr.isatty()) as progress:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            predicted[start:start + len(batch)] = model(batch).argmax(1).cpu().numpy()
            progress.advance(len(batch))
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return Score(confusion, predicted == labels)


@dataclass
class Paired:
    """A model against another on the same images: where only one of them is right."""
    better: int  # images this model classifies right and the other wrong
    worse: int  # the other way round

    @property
    def p_value(self) -> float:
        """McNemar's exact test: the chance of a split of the images that only one model gets right at least this
        uneven, were either model as likely to be the one (two-sided)."""
        from scipy.stats import binomtest

        disagree = self.better + self.worse
        return binomtest(self.better, disagree).pvalue if disagree else 1.0

    def as_dict(self) -> dict:
        return {"better": self.better, "worse": self.worse, "p_value": self.p_value}


def paired(model: Score, reference: Score) -> Paired:
    return Paired(int(np.sum(model.right & ~reference.right)), int(np.sum(~model.right & reference.right)))


def against_first(results: list[Score]) -> list[tuple[Paired, float]]:
    """Each model after the first set against it (:func:`paired`), with its p-value adjusted by Holm's method
    for the comparisons made together (:func:`holm`)."""
    comparisons = [paired(result, results[0]) for result in results[1:]]
    return list(zip(comparisons, holm([c.p_value for c in comparisons])))


def to_markdown(results: list[Score]) -> str:
    """A row of every image, then one a class: the images, and each model's accuracy on them, a column each; with
    one model, the class each is most often taken for; with several, each against the first (:func:`paired`)."""
    one = len(results) == 1
    models = ["accuracy"] if one else [f"model {n}" for n in range(1, len(results) + 1)]
    taken_for = ["most often taken for"] if one else []
    lines = [_cells(["class", "images", *models, *taken_for]), "|---|---:|" + "---:|" * len(results) + "---|" * one,
             _cells(["all", str(results[0].images), *(f"{r.correct / r.images:.2%}" for r in results), *[""] * one])]
    accuracies = np.array([r.class_accuracy() for r in results])  # (model, class)
    for i, cls in enumerate(CLASSES):
        row = results[0].confusion[i]
        if not row.any():  # a class of which a folder of labelled images has none
            continue
        shown = ["" if np.isnan(a) else f"{a:.2%}" for a in accuracies[:, i]]
        lines.append(_cells([cls, str(row.sum()), *shown, *([_taken_for(row, i)] if one else [])]))
    if not one:
        lines += ["", "Against model 1, on the images that only one of the two classifies right (McNemar's exact test; "
                      "p: the chance of a split at least this uneven between two models as good as each other):"]
    comparisons = len(results) - 1
    for n, (against, adjusted) in enumerate(against_first(results), 2):
        holms = f" ({adjusted:.2g} by Holm's method for the {comparisons} comparisons)" if comparisons > 1 else ""
        lines.append(f"- model {n}: right on {against.better} that model 1 gets wrong, wrong on {against.worse} "
                     f"that it gets right; p = {against.p_value:.2g}{holms}")
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
    parser.add_argument("--data", metavar="PATH", type=os.path.expanduser,
                        help="the labelled images, in any layout data.path takes, or in <class>/ folders (or a .zip "
                             f"or .tar.gz of them), of any size (default: the data the models trained on, else "
                             f"{DEFAULT_DATA})")
    parser.add_argument("--cache-dir", type=os.path.expanduser,
                        help="where the decoded data is cached (default: the models' training cache where they trained "
                             f"on the data, else {DEFAULT_CACHE_DIR})")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test (default), or train: every training image, the validation hold-out included")
    parser.add_argument("--json", action="store_true", help="one JSON object a model, with its confusion matrix "
                                                            "(and against_model_1, for the others)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    try:  # the models first: a wrong one is said before a new source is decoded
        models = [load_on_device(source, args.tracking_uri, args.device) for source in args.model]  # imports torch
        from cifar.provenance import provenance  # torch's modules too
        origins = [provenance(source, args.tracking_uri) for source in args.model]
        scored = _images_to_score(args.data, args.cache_dir, args.split, origins)
    except UserError as err:
        print(f"cifar.evaluate: error: {err}", file=sys.stderr)
        return 2
    for failure in scored.skipped:
        print(f"cifar.evaluate: skipped {failure.path}: {failure.reason}", file=sys.stderr)
    from cifar.device import default_eval_batch_size

    headings = ["model"] if len(args.model) == 1 else [f"model {n}" for n in range(1, len(args.model) + 1)]
    results = [score(model, scored.images, scored.labels, args.batch_size or default_eval_batch_size(device), device,
                     heading) for (model, device), heading in zip(models, headings)]
    status = 1 if scored.skipped else 0
    if args.json:
        comparisons = [{}] + [{"against_model_1": {**against.as_dict(), "p_value_holm": adjusted}}
                              for against, adjusted in against_first(results)]
        for model, origin, result, against in zip(args.model, origins, results, comparisons):
            print(json.dumps({"model": model, "run_name": origin.run_name, "data": str(scored.source),
                              "split": scored.split, "data_hash": scored.data_hash, **result.as_dict(), **against}))
        return status
    for heading, model, origin in zip(headings, args.model, origins):
        print(f"{heading:<9} {model}" + (f" (MLflow run {origin.run_name!r})" if origin.run_name else ""))
    print(f"data      {scored.source} ({scored.described})\n")
    print(to_markdown(results), end="")
    return status


@dataclass
class ImagesToScore:
    source: str | Path
    split: str | None  # None for a folder of labelled images
    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) class indices
    data_hash: str
    skipped: list[Failure] = field(default_factory=list)  # a folder of labelled images' files not read
    trained_on: str = ""  # "the data the model(s) trained on", where they are (:func:`_data_to_score`)

    @property
    def described(self) -> str:
        """What the heading says of them, after their source."""
        kind = "images labelled by their class folders" if self.split is None else f"{self.split} split"
        return f"{kind}, content hash {self.data_hash[:12]}" + (f", {self.trained_on}" if self.trained_on else "")


def _images_to_score(data: str | None, cache_dir: str | None, split: str,
                     origins: list[Provenance]) -> ImagesToScore:
    """The ``split`` of ``--data`` (decoded into ``cache_dir``), or of the data the models trained on
    (:func:`_data_to_score`); or, where ``--data`` is one, a folder of labelled images (:func:`labelled_folder`) or an
    archive of one that holds no CIFAR-10 layout (:func:`read_labelled_archive`)."""
    if data is not None and (folder := labelled_folder(Path(data))):
        _refuse_splits(split, data, "a folder")
        return read_labelled(folder)
    source, cache_dir, trained_on = _data_to_score(data, cache_dir, origins)
    try:
        dataset = load_cifar10(source, cache_dir, download=False, setting="--data")
    except NoLayoutError:
        if data is None or not Path(data).is_file() or (labelled := read_labelled_archive(Path(data), split)) is None:
            raise
        return labelled
    images, labels = (dataset.test_images, dataset.test_labels) if split == "test" else (
        dataset.train_images, dataset.train_labels)
    return ImagesToScore(source, split, images, labels, dataset.content_hash, trained_on=trained_on)


def _refuse_splits(split: str, data: str | Path, kind: str) -> None:
    if split != "test":
        raise UserError(f"--split {split}: --data={data} is {kind} of labelled images, which has no splits: "
                        "drop --split")


def read_labelled_archive(archive: Path, split: str) -> ImagesToScore | None:
    """The labelled images of an archive (.zip, .tar.gz) of class folders, as :func:`read_labelled` reads them from
    the temp folder it unpacks to (:func:`cifar.predict.unpacked`), or from that folder's one folder
    (``my-photos.zip``: ``my-photos/cat/...``), named as in the archive. None where it holds no class folder."""
    with unpacked([str(archive)]) as ([unpacked_to], named):
        root = Path(unpacked_to)
        try:
            folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            folder = labelled_folder(root) or (labelled_folder(folders[0]) if len(folders) == 1 else None)
            if folder is None:
                return None
            _refuse_splits(split, archive, "an archive")
            scored = read_labelled(folder)
        except UserError as err:
            raise UserError(named(str(err))) from err
    return replace(scored, source=archive, skipped=[Failure(named(f.path), f.reason) for f in scored.skipped])


def labelled_folder(path: Path) -> Path | None:
    """The folder of class folders at ``path``, or in its ``test/`` where it has no ``train/``: images labelled by
    hand, such as one's own photos, which the CIFAR-10 layouts do not take (they need a train split, 32x32 images
    and every class). None where ``path`` holds no class folder; a UserError where it holds others beside them."""
    if not path.is_dir():
        return None
    try:
        folders = {p.name.lower(): p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    except OSError as err:  # no permission to list it, a failing disk
        raise UserError(f"--data={path} cannot be read ({os_reason(err)}): fix its permissions, or point --data at "
                        "a readable copy") from err
    if "test" in folders and "train" not in folders:
        return labelled_folder(folders["test"])
    if not folders.keys() & set(CLASSES):
        return None
    if unknown := sorted(name for name in folders if name not in CLASSES):
        raise UserError(f"--data={path} holds class folders and others ({', '.join(unknown)}): name each folder after "
                        f"the class of its images, one of {', '.join(CLASSES)}")
    return path


def read_labelled(folder: Path) -> ImagesToScore:
    """The images under ``folder``'s class folders, in path order, read as cifar.predict reads files (any size);
    a UserError where there is none."""
    files, unlisted = image_files([str(folder)])  # unlisted: its folders that cannot be listed
    unlabelled = unlisted + [Failure(str(path), "not in a class folder") for path in files if path.parent == folder]
    files = [path for path in files if path.parent != folder]
    if not files:
        raise UserError(f"--data={folder} has no image files in its class folders: put the images of each class "
                        "in the folder named after it")
    with corrupt_exif_ignored():
        images, read, unreadable = read_images(files)
    if not read:
        raise UserError(f"--data={folder}: none of its {len(files)} image files can be read ({unreadable[0].path}: "
                        f"{unreadable[0].reason})")
    labels = np.array([CLASSES.index(path.relative_to(folder).parts[0].lower()) for path in read], dtype=np.int64)
    return ImagesToScore(folder, None, images, labels, content_hash(images, labels), unlabelled + unreadable)


def _data_to_score(data: str | None, cache_dir: str | None,
                   origins: list[Provenance]) -> tuple[str | Path, str | Path, str]:
    """The data source and cache dir to score the models on: ``--data`` and ``--cache-dir`` where given; else the
    data the models trained on (:class:`cifar.provenance.Provenance`), where one is known and no two differ, and
    what says so in the table's heading; else data/raw. A UserError where the models trained on different data."""
    if data is not None:
        return data, cache_dir or DEFAULT_CACHE_DIR, ""
    known = {n: origin.data for n, origin in enumerate(origins, 1) if origin.data is not None}  # by model number
    if not known:
        return DEFAULT_DATA, cache_dir or DEFAULT_CACHE_DIR, ""
    if len({training.path for training in known.values()}) > 1:
        each = "; ".join(f"model {n}: {training.path}" for n, training in known.items())
        raise UserError(f"the models trained on different data ({each}): give --data, the data to score them on")
    *_, training = known.values()
    which = ("the model" if len(origins) == 1 else "the models" if len(known) == len(origins)
             else f"model{'s' * (len(known) > 1)} {', '.join(map(str, known))}")
    return training.path, cache_dir or training.cache_dir, f"the data {which} trained on"


if __name__ == "__main__":
    exit_with_status_of(main)
