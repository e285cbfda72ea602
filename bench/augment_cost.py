"""What the in-batch augmentation costs per epoch: crops and flips, then each extra option on top.

Augments a training set of random uint8 images (50,000 by default, on the device that
``trainer.device=auto`` would pick) as one epoch of ``cifar.batches.Augmenter`` does; the settings are
timed interleaved, and the medians are reported with their difference from the first row.

    uv run python bench/augment_cost.py [--images 50000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar.batches import Augmenter  # noqa: E402
from cifar.device import resolve_device  # noqa: E402

SETTINGS = {
    "crops from a 2-pixel padding, random flips (the defaults)": {},
    "... with alternating flips": {"alternate_flip": True},
    "... with 8-pixel cutout": {"cutout": 8},
}


def epoch_seconds(augment: Augmenter, prepared: torch.Tensor, generator: torch.Generator, epoch: int) -> float:
    start = time.perf_counter()
    augment(prepared, generator, epoch)
    if prepared.device.type == "cuda":
        torch.cuda.synchronize(prepared.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    device = resolve_device("auto")
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    runs = {}
    for name, options in SETTINGS.items():
        augment = Augmenter(crop_padding=2, pad_mode="reflect", flip=True, cutout_fill=(0.49, 0.48, 0.45), **options)
        runs[name] = (augment, augment.prepare(images, torch.Generator(device).manual_seed(0)))
    generator = torch.Generator(device).manual_seed(1)
    times = {name: [] for name in runs}
    for epoch in range(1, args.repeats + 2):
        for name, (augment, prepared) in runs.items():
            seconds = epoch_seconds(augment, prepared, generator, epoch)
            if epoch > 1:  # the first round warms up the allocator
                times[name].append(seconds)

    print(f"{args.images:,} images on {device}, median of {args.repeats} epochs")
    print("| augmentation | seconds per epoch | change |")
    print("|---|---:|---:|")
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median - base:+.3f} |")


if __name__ == "__main__":
    main()
