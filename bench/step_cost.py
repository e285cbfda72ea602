"""What autocast, its loss scaler and gradient clipping cost a training step, on this machine's device.

Trains the model of ``--overrides`` (default ``model=simplecnn``, at its config's batch size) on about
``--images`` random uint8 images with ``cifar.engine.train_epoch`` (``random_steps.py``), each way in turn
over ``--rounds`` rounds (each way first in turn), each with a fresh model; the first pass of each round is
a warm-up.
The ways:

- ``fp32``: no autocast, the loss scaler passed through (``trainer.amp=false``);
- ``fp32, no scaler``: the same step calling ``backward`` and ``optimizer.step`` directly, as it did
  before the scaler: what the scaler costs a step where it is off;
- ``fp32, clipped``: the gradients' norm clipped to 1 before each step (``trainer.grad_clip_norm=1``);
- ``bf16``: autocast in bf16 (the default on CPUs and GPUs with native bf16);
- ``fp16 + scaler``: autocast in fp16 with ``torch.amp.GradScaler`` (the default on GPUs without
  native bf16, such as a T4 or V100); on a GPU only: CPUs have no fp16 arithmetic to speak of (simplecnn
  trained at 0.06x fp32's images/s in fp16 on an AMD EPYC with native bf16).

Prints the median training images/s of each way and its speed relative to the first.

    uv run python bench/step_cost.py --rounds 9
    uv run python bench/step_cost.py --device cuda --overrides "experiment=resnet9_fast" --images 20000
"""

from __future__ import annotations

import argparse
import dataclasses
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


class NoScaler:
    """The step as it was before the loss scaler: ``backward`` and ``optimizer.step`` called directly."""

    @staticmethod
    def scale(loss: torch.Tensor) -> torch.Tensor:
        return loss

    @staticmethod
    def step(optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    @staticmethod
    def update() -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overrides", default="model=simplecnn", help="the config of the model and its batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cfg = compose(args.overrides.split())
    batch = cfg.data.batch_size
    steps = RandomSteps(batch, math.ceil(args.images / batch), args.device)
    device = steps.runtime.device
    fp32 = dataclasses.replace(steps.runtime, amp=False)
    ways = {  # the runtime, the scaler (None: the runtime's) and the clipping norm
        "fp32": (fp32, None, None),
        "fp32, no scaler": (fp32, NoScaler(), None),
        "fp32, clipped": (fp32, None, 1.0),
        "bf16": (dataclasses.replace(fp32, amp=True, amp_dtype=torch.bfloat16), None, None),
    }
    if device.type == "cuda":
        ways["fp16 + scaler"] = (dataclasses.replace(fp32, amp=True, amp_dtype=torch.float16), None, None)
    images = len(steps.images)
    print(f"{cfg.model.name} on {device}, batch {batch}, {images} images a pass, {args.rounds} rounds")

    speeds: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # each way first in turn
            runtime, scaler, clip = ways[name]
            model = steps.on_device(build_model(cfg.model))
            optimizer = build_optimizer(cfg.optimizer, model, device)
            scaler = scaler or runtime.grad_scaler()  # one for both passes, as a run keeps its own
            for timed in (False, True):  # a warm-up pass, then the timed one
                start = time.perf_counter()
                steps.train(model, optimizer, runtime, scaler, max_grad_norm=clip)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if timed:
                    speeds[name].append(images / (time.perf_counter() - start))
    first = statistics.median(next(iter(speeds.values())))
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"{name:16s} {median:9,.0f} images/s  {median / first:.2f}x")


if __name__ == "__main__":
    main()
