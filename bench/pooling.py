"""2x2 max-pooling three ways, forward and backward, at simplecnn's three shapes: torch's
``max_pool2d`` (what the models use), a reshape and ``amax``, and ``torch.maximum`` of the four
strided slices. All three give the same outputs (checked); at ties the last two split the gradient
where ``max_pool2d`` gives it to one element.

The ways alternate, round after round, so that all see the same load on a shared machine; it prints
the median ms of each over the rounds and its ratio to ``max_pool2d``, for each dtype and memory
format (bf16 and channels_last are machine A's defaults).

    uv run python bench/pooling.py [--batch 128] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def pool_max_pool2d(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2)


def pool_amax(x: torch.Tensor) -> torch.Tensor:
    _, _, height, width = x.shape
    return x.unflatten(3, (width // 2, 2)).unflatten(2, (height // 2, 2)).amax(dim=(3, 5))


def pool_maximum(x: torch.Tensor) -> torch.Tensor:
    top = torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2])
    bottom = torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2])
    return torch.maximum(top, bottom)


WAYS = {"max_pool2d": pool_max_pool2d, "reshape + amax": pool_amax, "torch.maximum of slices": pool_maximum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    shapes = [(args.batch, 32, 32, 32), (args.batch, 64, 16, 16), (args.batch, 128, 8, 8)]  # simplecnn's BN outputs
    torch.manual_seed(0)
    print("| dtype | memory format | " + " | ".join(f"{name} (ms)" for name in WAYS) + " |")
    print("|---|---|" + "---:|" * len(WAYS))
    for dtype in (torch.bfloat16, torch.float32):
        for channels_last in (True, False):
            inputs = [torch.randn(shape, dtype=dtype) for shape in shapes]
            if channels_last:
                inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
            inputs = [x.requires_grad_() for x in inputs]
            for way in WAYS.values():
                assert all(torch.equal(way(x), pool_max_pool2d(x)) for x in inputs)
            times: dict[str, list[float]] = {name: [] for name in WAYS}
            for _ in range(args.rounds):
                for name, way in WAYS.items():
                    start = time.perf_counter()
                    for x in inputs:
                        y = way(x)
                        y.backward(torch.ones_like(y))
                    times[name].append((time.perf_counter() - start) * 1e3)
            medians = {name: statistics.median(t) for name, t in times.items()}
            base = medians["max_pool2d"]
            cells = [f"{ms:.2f} ({ms / base:.1f}x)" for ms in medians.values()]
            layout = "channels_last" if channels_last else "contiguous"
            print(f"| {str(dtype).removeprefix('torch.')} | {layout} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
