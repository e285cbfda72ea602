"""Training images/s of simplecnn: the classic lab pipeline against this project's trainer.

The classic pipeline is what the labs use: a torchvision CIFAR10-style dataset returning PIL
images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
with 2 workers, batch 128, Adam, fp32, and the model as the labs write it, ReLU before each
max-pool (this project's simplecnn pools first: the same function, computed on fewer elements;
the classic pipeline is also timed with that model, to show what each part gains). This trainer
runs the same model on uint8 tensors augmented in batch with fused Adam (and once without), fp32
and bf16 autocast, with and without channels_last, and with ``--compile`` also the CPU's default
(bf16 + channels_last where it has native bf16, else fp32 + channels_last) under torch.compile
(timed after a warm-up epoch of ``--warmup-images`` that compiles the model; the compile time is
printed apart). Each variant trains on the same number of images; variants are interleaved and
repeated, and medians are reported with their ratio to the classic pipeline.

    uv run python bench/throughput.py --data ../shared/data/cifar10-jpeg.tar.gz [--compile]
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
from cifar.config import compose  # noqa: E402
from cifar.data import load_cifar10  # noqa: E402
from cifar.device import Runtime, cpu_has_native_bf16  # noqa: E402
from cifar.engine import train_epoch  # noqa: E402
from cifar.models import build_model, relu_before_pool  # noqa: E402

BATCH = 128


def new_model(channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(compose(["model=simplecnn"]).model)
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
    """Training images/s of the classic lab pipeline (``model``: the labs' simplecnn unless given)."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=batch, shuffle=True, num_workers=2,
                        drop_last=True)
    model = model if model is not None else relu_before_pool(new_model(channels_last=False))
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
         fused: bool = True, lab_order: bool = False, compile_warmup_images: int = 0) -> float:
    """Training images/s of this trainer; with ``lab_order``, on the labs' simplecnn (ReLU before
    max-pool); with ``compile_warmup_images``, compiled and warmed up first."""
    runtime = Runtime(device=torch.device("cpu"), amp=amp, channels_last=channels_last)
    augment = Augmenter(crop_padding=4, pad_mode="reflect", flip=True)
    model = relu_before_pool(new_model(channels_last)) if lab_order else new_model(channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)  # fused: as cifar.optim builds it
    normalize = Normalizer.from_stats(mean, std, runtime.device, channels_last)

    def epoch(images: np.ndarray, labels: np.ndarray) -> int:
        x, y = to_tensors(images, labels, runtime.device)
        batches = train_batches(augment.prepare(x), y, BATCH, augment, torch.Generator().manual_seed(0))
        return train_epoch(model, batches, normalize, optimizer, None, torch.nn.CrossEntropyLoss(), runtime,
                           runtime.grad_scaler()).images

    if compile_warmup_images:
        model.compile()  # as cifar.task does with trainer.compile
        start = time.perf_counter()
        epoch(images[:compile_warmup_images], labels[:compile_warmup_images])
        print(f"    compiled and warmed up in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()  # the timing includes moving the data in and padding it
    return epoch(images, labels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--cache-dir", default="data/processed")
    parser.add_argument("--images", type=int, default=45000, help="training images per measurement")
    parser.add_argument("--amp-images", type=int, default=None,
                        help="images for the bf16 variants: default --images where the CPU has native bf16, "
                             "else 6400 (bf16 is emulated and slow there)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also measure the CPU's default under torch.compile")
    parser.add_argument("--warmup-images", type=int, default=1280, help="the compiled variant's untimed first epoch")
    args = parser.parse_args()

    data = load_cifar10(args.data, args.cache_dir, download=False)
    images, labels = data.train_images[: args.images], data.train_labels[: args.images]
    if args.amp_images is None:
        args.amp_images = args.images if cpu_has_native_bf16() else 6400
    amp_images, amp_labels = images[: args.amp_images], labels[: args.amp_images]
    variants = {
        "classic (PIL + DataLoader, fp32)": lambda: classic(images, labels, data.mean, data.std),
        "classic, with this project's simplecnn (max-pool before ReLU)": lambda: classic(
            images, labels, data.mean, data.std, model=new_model(channels_last=False)),
        "cifar fp32": lambda: ours(images, labels, data.mean, data.std, amp=False, channels_last=False),
        "cifar fp32 + channels_last, unfused Adam": lambda: ours(
            images, labels, data.mean, data.std, False, True, fused=False),
        "cifar fp32 + channels_last, ReLU before max-pool (the labs' order)": lambda: ours(
            images, labels, data.mean, data.std, False, True, lab_order=True),
        "cifar fp32 + channels_last (default: CPU without native bf16)": lambda: ours(
            images, labels, data.mean, data.std, False, True),
        "cifar bf16 autocast, contiguous": lambda: ours(amp_images, amp_labels, data.mean, data.std, True, False),
        "cifar bf16 autocast + channels_last (default: CPU with native bf16)": lambda: ours(
            amp_images, amp_labels, data.mean, data.std, True, True),
    }
    if args.compile:  # the CPU's default precision, compiled
        amp = cpu_has_native_bf16()
        compiled_images, compiled_labels = (amp_images, amp_labels) if amp else (images, labels)
        variants[f"cifar {'bf16 autocast' if amp else 'fp32'} + channels_last, torch.compile"] = lambda: ours(
            compiled_images, compiled_labels, data.mean, data.std, amp, True, compile_warmup_images=args.warmup_images)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}, batch {BATCH}, "
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
