"""Training images/s of simplecnn: the classic lab pipeline against this project's trainer.

The classic pipeline is what the labs use: a torchvision CIFAR10-style dataset returning PIL
images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
with 2 workers, batch 128, Adam, fp32. This trainer runs the same model on uint8 tensors
augmented in batch with fused Adam (and once without), fp32 and bf16 autocast, with and without
channels_last. Each variant trains on the same number of images; variants are interleaved and
repeated, and medians are reported with their ratio to the classic pipeline.

    uv run python bench/throughput.py --data ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar.batches import Augmenter, Normalizer, to_tensors, train_batches  # noqa: E402
from cifar.data import load_cifar10  # noqa: E402
from cifar.device import Runtime  # noqa: E402
from cifar.engine import train_epoch  # noqa: E402
from cifar.models import simplecnn  # noqa: E402

BATCH = 128


def new_model(channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = simplecnn([32, 64, 128], hidden=256, dropout=0.5, batch_norm=True)
    return model.to(memory_format=torch.channels_last) if channels_last else model


class PILDataset(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def classic(images: np.ndarray, labels: np.ndarray, mean, std, batch: int = BATCH,
            model: torch.nn.Module | None = None) -> float:
    """Training images/s of the classic lab pipeline (``model``: simplecnn unless given)."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=batch, shuffle=True, num_workers=2,
                        drop_last=True)
    model = model if model is not None else new_model(channels_last=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen = 0
    start = time.perf_counter()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    loss.item()
    return seen / (time.perf_counter() - start)


def ours(images: np.ndarray, labels: np.ndarray, mean, std, amp: bool, channels_last: bool,
         fused: bool = True) -> float:
    runtime = Runtime(device=torch.device("cpu"), amp=amp, channels_last=channels_last)
    augment = Augmenter(crop_padding=4, pad_mode="reflect", flip=True)
    model = new_model(channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)  # fused: as cifar.optim builds it
    start = time.perf_counter()  # the timing includes moving the data in and padding it
    x, y = to_tensors(images, labels, runtime.device)
    batches = train_batches(augment.prepare(x), y, BATCH, augment, torch.Generator().manual_seed(0))
    result = train_epoch(model, batches, Normalizer.from_stats(mean, std, runtime.device, channels_last),
                         optimizer, None, torch.nn.CrossEntropyLoss(), runtime)
    return result.images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--cache-dir", default="data/processed")
    parser.add_argument("--images", type=int, default=45000, help="training images per measurement")
    parser.add_argument("--amp-images", type=int, default=6400, help="images for the bf16 variant (slow on CPUs without native bf16)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = load_cifar10(args.data, args.cache_dir, download=False)
    images, labels = data.train_images[: args.images], data.train_labels[: args.images]
    variants = {
        "classic (PIL + DataLoader, fp32)": lambda: classic(images, labels, data.mean, data.std),
        "cifar fp32": lambda: ours(images, labels, data.mean, data.std, amp=False, channels_last=False),
        "cifar fp32 + channels_last, unfused Adam": lambda: ours(
            images, labels, data.mean, data.std, False, True, fused=False),
        "cifar fp32 + channels_last (CPU default)": lambda: ours(images, labels, data.mean, data.std, False, True),
        "cifar bf16 autocast + channels_last": lambda: ours(
            images[: args.amp_images], labels[: args.amp_images], data.mean, data.std, True, True),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"{len(images)} images per run ({args.amp_images} for bf16), {args.repeats} repeats")
    results: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, measure in variants.items():
            results[name].append(measure())
            print(f"  repeat {repeat + 1}: {name}: {results[name][-1]:.0f} img/s", flush=True)
    baseline = statistics.median(results["classic (PIL + DataLoader, fp32)"])
    print(f"\n| variant | images/s (median of {args.repeats}) | ratio to classic |\n|---|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
