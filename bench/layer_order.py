"""simplecnn's training step with max-pool before ReLU (this project) against ReLU before max-pool
(the labs' order): the same function, so the same outputs and gradients, with the ReLU on a
quarter of the elements.

Both models train side by side in this trainer's step (``cifar.engine.train_epoch``, the CPU's
defaults) on the same random batches, alternating in short chunks so that both see the same load
on a shared machine; it prints the median ms a step of each and the median of the paired ratios.

    uv run python bench/layer_order.py [--model simplecnn|resnet9] [--rounds 25] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.random_steps import RandomSteps  # noqa: E402
from cifar.models import relu_before_pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("simplecnn", "resnet9"), default="simplecnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--steps", type=int, default=8, help="steps per model per round")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds {args.rounds}: the ratio's quartiles need 2 rounds or more")

    steps = RandomSteps(args.batch, args.steps)
    ours = steps.model(args.model)
    models = {"max-pool before ReLU (this project)": ours, "ReLU before max-pool (the labs)": relu_before_pool(ours)}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-3, fused=True) for name, model in models.items()}

    def chunk(name: str) -> float:
        start = time.perf_counter()
        steps.train(models[name], optimizers[name])
        return (time.perf_counter() - start) / args.steps * 1000

    for name in models:
        chunk(name)  # warm-up: oneDNN primitives
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            times[name].append(chunk(name))
    ours_name, labs_name = models
    ratios = [labs / ours for ours, labs in zip(times[ours_name], times[labs_name])]
    print(f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"channels_last={steps.runtime.channels_last}, {args.rounds} rounds of {args.steps} steps each")
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):.1f} ms a step (median)")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"  labs' step / this project's step: {statistics.median(ratios):.3f}x "
          f"(quartiles {quartiles[0]:.3f}x to {quartiles[2]:.3f}x)")


if __name__ == "__main__":
    main()
