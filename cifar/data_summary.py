"""``python -m cifar.data [--grid FILE.png] [OVERRIDES...]``: what the configured data holds, as training sees it.

    python -m cifar.data                                   # data/raw, decoded into data/processed
    python -m cifar.data data.path=data/processed/cifar10.npz --grid samples.png

Prints the source, the decoded cache (path, size, content hash), the per-channel mean and std,
and the images per class in the train / validation / test splits that a run with the same
overrides (data.val_size, data.limit, data.test_limit, seed) trains, validates and tests on.
Decodes the source first if it has no cache yet. ``--grid`` writes a PNG of sample training
images, a row per class.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from cifar.data import CLASSES, Cifar10, load_cifar10, split_indices
from cifar.errors import os_reason
from cifar.files import atomic_write

GRID_COLUMNS = 10


def split_counts(data: Cifar10, cfg_data, seed: int) -> dict[str, np.ndarray]:
    """Images per class in each split of a run with this data config and seed."""
    train, val, test = split_indices(len(data.train_labels), len(data.test_labels), cfg_data, seed)
    return {
        "train": np.bincount(data.train_labels[train], minlength=len(CLASSES)),
        "val": np.bincount(data.train_labels[val], minlength=len(CLASSES)),
        "test": np.bincount(data.test_labels[test], minlength=len(CLASSES)),
    }


def describe(data: Cifar10, counts: dict[str, np.ndarray]) -> str:
    size = data.cache_file.stat().st_size / 2**20
    lines = [
        f"cache         {data.cache_file} ({size:.1f} MiB)",
        f"content hash  {data.content_hash}",
        f"mean (RGB)    {', '.join(f'{m:.4f}' for m in data.mean)}",
        f"std (RGB)     {', '.join(f'{s:.4f}' for s in data.std)}",
        "",
        f"{'class':<12}" + "".join(f"{split:>8}" for split in counts),
    ]
    for index, name in enumerate(CLASSES):
        lines.append(f"{name:<12}" + "".join(f"{c[index]:>8}" for c in counts.values()))
    lines.append(f"{'total':<12}" + "".join(f"{c.sum():>8}" for c in counts.values()))
    return "\n".join(lines)


def write_grid(data: Cifar10, path: Path, seed: int) -> None:
    """A PNG of GRID_COLUMNS random training images of each class, a row per class."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    side, label_width = 32, 80
    grid = Image.new("RGB", (label_width + GRID_COLUMNS * (side + 2), len(CLASSES) * (side + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(CLASSES):
        members = np.flatnonzero(data.train_labels == row)
        chosen = rng.choice(members, size=min(GRID_COLUMNS, len(members)), replace=False)
        draw.text((4, row * (side + 2) + side // 2 - 6), name, fill="black")
        for column, index in enumerate(chosen):
            grid.paste(Image.fromarray(data.train_images[index]), (label_width + column * (side + 2), row * (side + 2)))
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST)
    atomic_write(path, lambda f: grid.save(f, format="PNG"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for cifar.train (data.*, seed)")
    parser.add_argument("--grid", type=lambda path: Path(path).expanduser(), metavar="FILE.png",  # --grid=~/...
                        help="write sample images per class here")
    args = parser.parse_args(argv)
    if args.grid is not None and args.grid.suffix.lower() != ".png":
        print(f"cifar.data: error: --grid {args.grid} is not a .png file: give a FILE.png", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # "Decoding ..." when there is no cache yet

    from cifar.config import compose
    from cifar.train import USER_ERRORS, describe as describe_error

    try:
        cfg = compose(args.overrides)
        print(f"source        {cfg.data.path}")
        data = load_cifar10(cfg.data.path, cfg.data.cache_dir, cfg.data.download)
        counts = split_counts(data, cfg.data, cfg.seed)
    except USER_ERRORS as err:
        print(f"cifar.data: error: {describe_error(err, sweeps=False)}", file=sys.stderr)
        return 2
    print(describe(data, counts))
    if args.grid:
        try:
            write_grid(data, args.grid, cfg.seed)
        except OSError as err:
            print(f"cifar.data: error: cannot write --grid {args.grid} ({os_reason(err)}): give a FILE.png in a "
                  "writable folder", file=sys.stderr)
            return 2
        print(f"\nsample grid   {args.grid}")
    return 0
