"""``python -m cifar.predict``: classify image files with a trained model.

    python -m cifar.predict photo.jpg photos/ --model outputs/2026-11-23/10-00-00/best.pt
    python -m cifar.predict photos/ --model 0123456789abcdef0123456789abcdef --top-k 3
    python -m cifar.predict photos/ --model models:/cifar-simplecnn/1 --json
    python -m cifar.predict photos/ --model multirun/2026-11-23/10-00-00   # a sweep: its best job's model

Images of any size and colour mode are turned upright as their EXIF orientation says (as viewers
show them), resized to 32x32 RGB (the whole image, its aspect ratio not kept; 16-bit grey scaled to
8 bits) and normalised as in training. Folders are searched recursively for image files (png, jpg,
jpeg, bmp, webp, gif, tif), hidden files and folders apart; an archive given (.zip, .tar.gz, .tgz, .tar)
is unpacked into a temp folder and searched so, its files named as in it (``photos.zip/cat/1.jpg``). A
file that cannot be read as an image is reported on stderr and skipped; the exit status is 1 if any was,
2 if the model or an archive cannot be read.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from cifar import data
from cifar.collector import import_for_good
from cifar.data import CLASSES
from cifar.errors import UserError, exit_with_status_of, first_line, os_reason

IMAGE_SUFFIXES = (*data.IMAGE_SUFFIXES, ".gif", ".tif", ".tiff")  # any image Pillow reads, not only dataset formats
SIDE = 32
MAX_DECODED_PIXELS = 178_956_970  # Pillow's limit, where it refuses an image as a decompression bomb
READ_CHUNK = 512  # files decoded at a time, in a thread, while the model classifies the previous ones


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), most probable first

    def as_dict(self) -> dict:
        label, confidence = self.top[0]
        return {"path": self.path, "label": label, "confidence": round(confidence, 6),
                "top_k": [{"label": c, "confidence": round(p, 6)} for c, p in self.top]}


@dataclass
class Failure:
    path: str
    reason: str


def image_files(paths: Sequence[str]) -> tuple[list[Path], list[Failure]]:
    """The files to classify: each file given, and the image files under each folder given (sorted); those that
    cannot be: a path that does not exist, a folder that cannot be listed."""
    files, failures = [], []

    def unlisted(err: OSError) -> None:
        failures.append(Failure(str(err.filename), f"not a readable folder ({os_reason(err)})"))

    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in data.visible_files(path, unlisted)
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            failures.append(Failure(name, "no such file or folder"))
    return files, failures


def read_image(path: Path) -> np.ndarray:
    """The image at ``path`` as (32, 32, 3) uint8 RGB; OSError if it cannot be read, ValueError if not an image, or
    if more than ``MAX_DECODED_PIXELS`` would be decoded: Pillow's guard against decompression bombs, but counted
    where a JPEG is decoded at a smaller scale, so that a phone's 200-megapixel photo is read (as 3 megapixels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _pillows_size_check_off(), Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (SIDE, SIDE))  # decode at the smallest scale that is still >= 32x32
            if (pixels := image.width * image.height) > MAX_DECODED_PIXELS:
                raise ValueError(f"{image.width}x{image.height}: {pixels:,} pixels to decode, over Pillow's limit "
                                 f"of {MAX_DECODED_PIXELS:,}, its guard against decompression bombs; shrink it first")
            image = data.upright_rgb(image)
            if image.size != (SIDE, SIDE):
                image = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)  # antialiased when shrinking
            return np.asarray(image)
    except UnidentifiedImageError as err:
        raise ValueError("not an image format that Pillow reads") from err
    except SyntaxError as err:  # Pillow's error for a corrupt header
        raise ValueError(first_line(err)) from err


@contextlib.contextmanager
def _pillows_size_check_off() -> Iterator[None]:
    """Pillow's check of an image's size as it opens, off (:func:`read_image` checks what it decodes instead).
    The setting is the process's: images are opened in one thread at a time here."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_images(files: list[Path]) -> tuple[np.ndarray, list[Path], list[Failure]]:
    """The images of ``files`` that can be read, as (N, 32, 32, 3) uint8; the files they are; those that cannot."""
    images, read, failures = [], [], []
    for path in files:
        try:
            images.append(read_image(path))
            read.append(path)
        except ValueError as err:
            failures.append(Failure(str(path), f"not a readable image ({err})"))
        except OSError as err:  # unreadable file, or truncated image data
            failures.append(Failure(str(path), f"not a readable image ({os_reason(err)})"))
    return np.stack(images) if images else np.empty((0, SIDE, SIDE, 3), np.uint8), read, failures


def classify(model, files: list[Path], batch_size: int, top_k: int, device) -> Iterator[Prediction | Failure]:
    """Predictions for ``files`` in order; the next chunk of files decodes in a thread while the model runs."""
    import torch

    chunks = [files[i : i + READ_CHUNK] for i in range(0, len(files), READ_CHUNK)]
    # the warnings filter is the process's: set here, not in the reader thread, whose setting and restoring it
    # would race with the main thread's
    with data.corrupt_exif_ignored(), ThreadPoolExecutor(max_workers=1) as reader, torch.inference_mode():
        pending = reader.submit(read_images, chunks[0]) if chunks else None
        for index in range(len(chunks)):
            images, read, failures = pending.result()
            if index + 1 < len(chunks):
                pending = reader.submit(read_images, chunks[index + 1])
            yield from failures
            for start in range(0, len(read), batch_size):
                batch = torch.from_numpy(images[start : start + batch_size]).to(device)
                values, indices = model(batch).float().cpu().topk(top_k, dim=1)
                for path, row_values, row_indices in zip(read[start:], values.tolist(), indices.tolist()):
                    yield Prediction(str(path), [(CLASSES[i], p) for i, p in zip(row_indices, row_values)])


def table_row(prediction: Prediction, width: int) -> str:
    label, confidence = prediction.top[0]
    line = f"{prediction.path:<{width}}  {label:<10}  {confidence:>6.1%}"
    if len(prediction.top) > 1:
        line += "  " + ", ".join(f"{c} {p:.1%}" for c, p in prediction.top[1:])
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, default=1, metavar="K", help="also print the next K-1 classes")
    parser.add_argument("--json", action="store_true", help="one JSON object per image, per line")
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= len(CLASSES):
        parser.error(f"--top-k must be between 1 and {len(CLASSES)}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    try:
        model, device = load_on_device(args.model, args.tracking_uri, args.device)
        with unpacked(args.paths) as (paths, named):
            return _print_predictions(model, device, paths, named, args)
    except UserError as err:
        print(f"cifar.predict: error: {err}", file=sys.stderr)
        return 2


def _print_predictions(model, device, paths: list[str], named: Callable[[str], str], args: argparse.Namespace) -> int:
    """Classify the image files of ``paths`` and print each one's classes, as ``named`` names them; the exit
    status."""
    from cifar.device import default_eval_batch_size

    files, missing = image_files(paths)
    width = max((len(named(str(f))) for f in files), default=4)
    header = None if args.json else f"{'path':<{width}}  {'label':<10}  confidence"  # above the first row, if any
    failed = 0
    batch_size = args.batch_size or default_eval_batch_size(device)
    for result in itertools.chain(missing, classify(model, files, batch_size, args.top_k, device)):
        result = replace(result, path=named(result.path))
        if isinstance(result, Failure):
            failed += 1
            print(f"cifar.predict: skipped {result.path}: {result.reason}", file=sys.stderr)
        elif args.json:
            print(json.dumps(result.as_dict()))
        else:
            if header:
                print(header)
                header = None
            print(table_row(result, width))
    if not files and not failed:
        print(f"cifar.predict: no image files in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    return 1 if failed else 0


@contextlib.contextmanager
def unpacked(paths: Sequence[str]) -> Iterator[tuple[list[str], Callable[[str], str]]]:
    """``paths`` with each archive file among them (.zip, .tar.gz, .tgz, .tar) unpacked into a temp folder that
    lasts as long as the context (:func:`cifar.data.unpack`), and what names the paths in a text as in their
    archives (``photos.zip/cat/1.jpg``); a DataError where an archive cannot be read."""
    with contextlib.ExitStack() as stack:
        given, archives = [], {}  # the temp folder an archive was unpacked into: the archive's path
        for path in paths:
            if path.endswith(data.ARCHIVE_SUFFIXES) and Path(path).is_file():
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cifar-unpacked-"))
                data.unpack(Path(path), Path(folder))
                archives[folder] = path
                path = folder
            given.append(path)

        def named(text: str) -> str:
            for folder, archive in archives.items():
                text = text.replace(folder, archive)
            return text

        yield given, named


def add_model_arguments(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """The options that say which model (``several``: one or more, each ``--model``), and where it runs
    (``cifar.predict``'s and ``cifar.evaluate``'s)."""
    parser.add_argument("--model", required=True, metavar="SOURCE", action="append" if several else "store",
                        type=os.path.expanduser,  # ~ left by the shell in --model=~/...
                        help="a best.pt/last.pt (or the run dir holding best.pt), an MLflow run id, a sweep's "
                             "dir or parent run id (its best job's model), or a models:/NAME/VERSION URI"
                             + ("; give --model again for each other model" if several else ""))
    parser.add_argument("--tracking-uri", help="MLflow store of --model (default: MLFLOW_TRACKING_URI, else the "
                                               "store of a sweep dir, else sqlite:///mlflow.db)")
    parser.add_argument("--batch-size", type=int, help="images a batch (default: the device's, as in training)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")


def load_on_device(source: str, tracking_uri: str | None, device_name: str):
    """The classifier of ``--model`` on the ``--device``, and that device; a UserError where either is wrong."""
    import_for_good("cifar.inference")  # torch's modules: without the collections that importing them sets off
    import torch

    from cifar import inference
    from cifar.device import default_channels_last, resolve_device

    device = resolve_device(device_name, setting="--device")
    if not sys.stderr.isatty():  # MLflow's bar for a model it downloads: a line per update in a log or a pipe
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    model = inference.load(source, tracking_uri).to(device)
    if default_channels_last(device):  # the images arrive as NHWC, which is channels_last once permuted
        model = model.to(memory_format=torch.channels_last)
    return model, device


if __name__ == "__main__":
    exit_with_status_of(main)
