"""What Muon costs training: this trainer's steps with optimizer=muon against optimizer=sgd.

Each way trains the model of its config (``--sgd`` and ``--muon``: overrides, by default
``experiment=airbench`` and ``experiment=airbench_muon``) at its config's batch size (``--batch``
sets both) on about ``--images`` random uint8 images with the CPU's defaults
(``bench/random_steps.py``). The ways are interleaved over ``--rounds`` rounds, each with a fresh
model; the first pass of each round is a warm-up. Prints the median training images/s, and the
share of the time in ``optimizer.step()``, with each way's speed relative to the first.

    uv run python bench/muon_step.py --rounds 3
    uv run python bench/muon_step.py --batch 256 --sgd experiment=resnet18_onecycle \
        --muon "experiment=resnet18_onecycle optimizer=muon"
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.random_steps import RandomSteps  # noqa: E402
from cifar.config import compose  # noqa: E402
from cifar.models import build_model  # noqa: E402
from cifar.optim import build_optimizer  # noqa: E402


class TimedSteps:
    """Wraps an optimizer and adds up the seconds its ``step`` takes."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer, self.seconds = optimizer, 0.0

    def step(self) -> None:
        start = time.perf_counter()
        self.optimizer.step()
        self.seconds += time.perf_counter() - start

    def __getattr__(self, name: str):
        return getattr(self.optimizer, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sgd", default="experiment=airbench", help="overrides of the way to compare with")
    parser.add_argument("--muon", default="experiment=airbench_muon", help="overrides of the way with optimizer=muon")
    parser.add_argument("--batch", type=int, help="both ways' batch size (default: each config's)")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ways = {"sgd": compose(args.sgd.split()), "muon": compose(args.muon.split())}
    batches = {name: args.batch or cfg.data.batch_size for name, cfg in ways.items()}
    steps = {name: RandomSteps(batch, math.ceil(args.images / batch)) for name, batch in batches.items()}
    images_per_s: dict[str, list[float]] = {name: [] for name in ways}
    optimizer_share: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, cfg in ways.items():
            model = steps[name].on_device(build_model(cfg.model))  # airbench's first layer trained, not whitened
            optimizer = TimedSteps(build_optimizer(cfg.optimizer, model, steps[name].runtime.device))
            steps[name].train(model, optimizer)  # warm-up
            optimizer.seconds = 0.0
            start = time.perf_counter()
            steps[name].train(model, optimizer)
            seconds = time.perf_counter() - start
            images_per_s[name].append(len(steps[name].images) / seconds)
            optimizer_share[name].append(optimizer.seconds / seconds)

    print(f"about {args.images} images a pass, {args.rounds} rounds, {torch.get_num_threads()} threads: medians")
    print("| way | model | optimizer | batch | training images/s | in optimizer.step() | vs sgd |")
    print("|---|---|---|---:|---:|---:|---:|")
    sgd_speed = statistics.median(images_per_s["sgd"])
    for name, cfg in ways.items():
        speed, share = statistics.median(images_per_s[name]), statistics.median(optimizer_share[name])
        print(f"| {name} | {cfg.model.name} | {cfg.optimizer.name} | {batches[name]} | {speed:.0f} | {share:.1%} | "
              f"{speed / sgd_speed:.2f}x |")


if __name__ == "__main__":
    main()
