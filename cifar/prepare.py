"""``python -m cifar.prepare RAW OUT_DIR``: the DVC pipeline's prepare stage.

Decodes the raw data (any source ``data.path`` accepts) into ``OUT_DIR/cifar10.npz`` and writes
``OUT_DIR/stats.json``: content hash, per-channel mean/std and class counts. Training then reads
the ``.npz`` (``data.path=data/processed/cifar10.npz``). Both files are written to a temp file
and renamed, so a failed run leaves neither half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from cifar.data import write_decoded
from cifar.errors import DataError, exit_with_status_of
from cifar.files import atomic_write_text

DECODED = "cifar10.npz"
STATS = "stats.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="the raw data: a directory or archive")
    parser.add_argument("out_dir", type=Path, help=f"where to write {DECODED} and {STATS}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data = write_decoded(args.out_dir / DECODED, args.raw, setting="RAW")
    except DataError as err:
        print(f"cifar.prepare: error: {err}", file=sys.stderr)
        return 2
    atomic_write_text(args.out_dir / STATS, json.dumps(data.stats, indent=2) + "\n")
    print(f"{args.out_dir / DECODED}: {len(data.train_labels)} train / {len(data.test_labels)} test images")
    return 0


if __name__ == "__main__":
    exit_with_status_of(main)
