"""Evaluation throughput by batch size: what ``data.eval_batch_size: null`` picks per device.

Times the models' forward pass under ``torch.inference_mode`` (the device's channels_last and
amp defaults, as evaluation runs) over the same images at each batch size; interleaved
repeats, medians of images/s reported with the ratio to the largest batch.

    uv run python bench/eval_batch.py [--device cpu] [--images 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar.device import default_eval_batch_size, make_runtime  # noqa: E402
from cifar.models import build_model  # noqa: E402

MODELS = {
    "simplecnn": {"name": "simplecnn", "channels": [32, 64, 128], "hidden": 256, "dropout": 0.5, "batch_norm": True},
    "resnet18": {"name": "resnet18"},
}
BATCHES = (64, 128, 256, 512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--resnet-images", type=int, default=1024, help="fewer for resnet18 on a CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runtime = make_runtime(args.device, amp=None, channels_last=None, compile=False, threads=None)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    print(f"{runtime.device}, amp={runtime.amp_name}, channels_last={runtime.channels_last}, "
          f"{torch.get_num_threads()} threads; default eval batch {default_eval_batch_size(runtime.device)}; "
          f"images/s, medians of {args.repeats}:")
    print("| model | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    for name, cfg in MODELS.items():
        n = args.images if name == "simplecnn" else args.resnet_images
        model = build_model(OmegaConf.create(cfg)).to(runtime.device, memory_format=memory_format).eval()
        images = torch.randn(n, 3, 32, 32, device=runtime.device).contiguous(memory_format=memory_format)
        rates: dict[int, list[float]] = {b: [] for b in BATCHES}
        with torch.inference_mode(), runtime.autocast():
            model(images[:BATCHES[0]])  # warm-up
            for _ in range(args.repeats):
                for batch in BATCHES:
                    _sync(runtime.device)
                    start = time.perf_counter()
                    for first in range(0, n, batch):
                        model(images[first : first + batch])
                    _sync(runtime.device)
                    rates[batch].append(n / (time.perf_counter() - start))
        largest = statistics.median(rates[BATCHES[-1]])
        cells = [f"{statistics.median(rates[b]):,.0f} ({statistics.median(rates[b]) / largest:.2f}x)" for b in BATCHES]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
