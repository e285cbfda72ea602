"""Where a training step's time goes: torch.profiler's top operators for one model, by self CPU time.

Runs this project's training step (``cifar.engine.train_epoch``: uint8 batch, normalisation,
forward, loss, backward, fused optimizer step, on-device sums) on random uint8 images, after a
warm-up, and groups the operators into model compute (convolutions, matmuls, BatchNorm,
activations, pooling) and the rest (optimizer, data movement, bookkeeping).

    uv run python bench/profile_step.py --model simplecnn
    uv run python bench/profile_step.py --model resnet18 --steps 3 --batch 64
    uv run python bench/profile_step.py --model resnet9 --steps 3 --batch 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.random_steps import RandomSteps  # noqa: E402
from cifar.config import CONF_DIR  # noqa: E402

MODEL_OPS = ("convolution", "mm", "batch_norm", "threshold", "relu", "max_pool", "clamp_min", "dropout", "bernoulli",
             "log_softmax", "nll_loss", "avg_pool", "mean")  # resnet18's adaptive average pool is a mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")),
                        default="simplecnn", help="an option of conf/model, built as its config says")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    steps = RandomSteps(args.batch, args.steps)
    model = steps.model(args.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    steps.train(model, optimizer)  # warm-up: oneDNN primitives, first-step imports
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps.train(model, optimizer)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    model_time = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in MODEL_OPS))
    print(f"{args.model}, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"channels_last={steps.runtime.channels_last}: {total / 1e3 / args.steps:.1f} ms of operators a step, "
          f"{model_time / total:.0%} in model compute\n")
    print("| operator | share of self CPU time | ms a step |\n|---|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"| {e.key} | {e.self_cpu_time_total / total:.1%} | {e.self_cpu_time_total / 1e3 / args.steps:.2f} |")


if __name__ == "__main__":
    main()
