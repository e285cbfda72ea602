"""Test-time augmentation (``trainer.tta_flip``, ``trainer.tta_translate``): test accuracy and evaluation time.

Evaluates one trained checkpoint on the test set without TTA, with flip TTA (each image's logits
averaged with its mirror image's) and with flip and translate TTA (six views: see
``cifar.engine.predict_logits``); interleaved repeats, medians reported. By default it takes what the DVC
pipeline left: the default recipe's ``results/train/best.pt`` and ``data/processed/cifar10.npz``
(``uv run dvc pull`` or ``uv run dvc repro`` first).

    uv run python bench/tta.py [--checkpoint results/train/best.pt] [--data data/processed/cifar10.npz] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar import inference  # noqa: E402
from cifar.batches import Normalizer, to_tensors  # noqa: E402
from cifar.data import load_cifar10  # noqa: E402
from cifar.device import default_eval_batch_size, make_runtime  # noqa: E402
from cifar.engine import TTA, evaluate  # noqa: E402

SETTINGS = (TTA(), TTA(flip=True), TTA(flip=True, translate=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "results/train/best.pt")
    parser.add_argument("--data", type=Path, default=REPO / "data/processed/cifar10.npz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="auto: a GPU where there is one (its defaults: bf16, ...)")
    args = parser.parse_args()
    for path in (args.checkpoint, args.data):
        if not path.exists():
            sys.exit(f"{path} is missing: run `uv run dvc repro` (or pass --checkpoint/--data)")
    runtime = make_runtime(args.device, amp=None, channels_last=None, compile=False, threads=None)
    data = load_cifar10(args.data, REPO / "data/processed", download=False)
    model = inference.from_checkpoint(args.checkpoint).model.to(runtime.device)  # the network alone: TTA is compared
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, labels = to_tensors(data.test_images, data.test_labels, runtime.device)
    normalize = Normalizer.from_stats(data.mean, data.std, runtime.device, runtime.channels_last)
    batch_size = default_eval_batch_size(runtime.device)
    results: dict[TTA, list[tuple[float, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.repeats):
        for tta in SETTINGS:
            start = time.perf_counter()
            acc = evaluate(model, images, labels, normalize, batch_size, runtime, tta).acc
            results[tta].append((acc, time.perf_counter() - start))
    print(f"{len(labels)} test images, {args.checkpoint}; medians of {args.repeats}:")
    print("| trainer.tta_flip | trainer.tta_translate | test acc | eval seconds |\n|---|---|---:|---:|")
    for tta, runs in results.items():
        print(f"| {str(tta.flip).lower()} | {str(tta.translate).lower()} | "
              f"{statistics.median(a for a, _ in runs):.2%} | {statistics.median(s for _, s in runs):.2f} |")


if __name__ == "__main__":
    main()
