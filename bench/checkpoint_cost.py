"""What writing an epoch's checkpoints costs the training loop: written in place (``checkpoint.save``,
as the trainer did) against written in the background (``checkpoint.Writer``, as it does now).

For each model, the state the trainer writes each epoch (``best.pt``: the weights; ``last.pt``: the
weights and SGD's momentum) is written after each of a series of short "epochs", both ways in
turn. An epoch here is a fixed loop of small tensor operations on the host (``--epoch-ops`` of them):
Python-bound work that needs the interpreter, as a GPU epoch's kernel launches do, so that a
background write that holds the interpreter shows up as a slower epoch. It prints the medians of
the epoch's own time, of the time the loop waits on checkpoints, and of their sum.

    uv run python bench/checkpoint_cost.py [--models resnet9 resnet18] [--epochs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar import checkpoint  # noqa: E402
from cifar.config import compose  # noqa: E402
from cifar.files import BEST, LAST  # noqa: E402
from cifar.models import build_model  # noqa: E402


SERIES = 5  # epochs in a row each way: in the background, all but the first overlap a write


def epoch_states(name: str) -> tuple[dict, dict]:
    """``best.pt`` and ``last.pt`` as the trainer writes them for ``model=name`` after an SGD step."""
    model = build_model(compose([f"model={name}"]).model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict()}, {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def host_epoch(ops: int) -> None:
    x = torch.ones(64)
    for _ in range(ops):
        x = x * 1.0001 + 1e-6


def run(name: str, epochs: int, ops: int, directory: Path) -> dict[str, dict[str, list[float]]]:
    best, last = epoch_states(name)
    files = {directory / BEST: best, directory / LAST: last}
    times = {way: {"epoch": [], "checkpoints": []} for way in ("in place", "in the background")}

    def epoch(way: str, write: Callable[[], object]) -> None:
        start = time.perf_counter()
        host_epoch(ops)
        middle = time.perf_counter()
        write()
        times[way]["epoch"].append(middle - start)
        times[way]["checkpoints"].append(time.perf_counter() - middle)

    for _ in range(epochs):  # the two ways alternate, a series of epochs each
        for _ in range(SERIES):
            epoch("in place", lambda: [checkpoint.save(path, state) for path, state in files.items()])
        with checkpoint.Writer() as writer:
            for _ in range(SERIES):
                epoch("in the background", lambda: writer.submit(files))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet9", "resnet18"])
    parser.add_argument("--epochs", type=int, default=7, help="rounds of SERIES epochs each way")
    parser.add_argument("--epoch-ops", type=int, default=40_000, help="small operations in an epoch")
    args = parser.parse_args()

    print(f"{torch.get_num_threads()} torch threads, epochs of {args.epoch_ops} small operations, medians of "
          f"{args.epochs * SERIES} epochs each way, ms")
    print("| model | checkpoints written | epoch | waiting on checkpoints | epoch + waiting |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models:
            for way, series in run(name, args.epochs, args.epoch_ops, Path(directory)).items():
                epoch, waiting = (statistics.median(series[key]) * 1000 for key in ("epoch", "checkpoints"))
                total = statistics.median(e + c for e, c in zip(series["epoch"], series["checkpoints"])) * 1000
                print(f"| {name} | {way} | {epoch:.0f} | {waiting:.0f} | {total:.0f} |")


if __name__ == "__main__":
    main()
