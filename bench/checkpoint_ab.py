"""Checkpoints written in the background (the trainer's ``checkpoint.Writer``) against in place, in real
training runs: ``python -m cifar.train OVERRIDES`` both ways in turn for ``--rounds`` rounds, into one fresh
MLflow store. In place, ``Writer.submit`` saves the epoch's files before it returns, as the trainer did
before the writer. For each run it prints the median over its epochs of the training steps' images/s
(``train/images_per_s``, which leaves the checkpoints out) and of an epoch's wall time with its
checkpoints (the time between two epochs' metrics being logged), then each way's medians and the ratios.
``bench/checkpoint_cost.py`` weighs the same choice on the CPU with synthetic Python-bound epochs.

    python bench/checkpoint_ab.py --rounds 2 experiment=resnet18_onecycle trainer.epochs=10 \\
        data.val_size=0 data.path=data/processed/cifar10.npz          # on a GPU
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import tempfile
from pathlib import Path

from time_to_accuracy import train_into_store  # which also puts the repository on sys.path

WAYS = ("background", "in place")


def train_in_place(overrides: list[str]) -> None:
    """``cifar.train`` in this process, with each epoch's checkpoints written before the next epoch starts."""
    from cifar import checkpoint

    def submit_in_place(writer: checkpoint.Writer, files: dict) -> None:
        writer.wait()
        checkpoint._save_all({path: checkpoint.on_host(state) for path, state in files.items()})

    checkpoint.Writer.submit = submit_in_place
    sys.argv = ["cifar.train", *overrides]
    runpy.run_module("cifar.train", run_name="__main__", alter_sys=True)


def run_once(way: str, overrides: list[str], workdir: Path, index: int) -> dict[str, float]:
    """Train once ``way``; the run's median epoch images/s and median epoch wall seconds."""
    entry = ["-m", "cifar.train"] if way == "background" else [__file__, "--in-place-child"]
    client, experiment = train_into_store(workdir, entry, [*overrides, f"hydra.run.dir={workdir / f'run{index}'}"])
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=1)[0]
    epochs = sorted(client.get_metric_history(run.info.run_id, "train/images_per_s"), key=lambda m: m.step)
    if len(epochs) < 3:
        sys.exit("checkpoint_ab: a run needs 3 epochs or more (trainer.epochs=3): the first one's wall time "
                 "holds the start")
    walls = [(later.timestamp - earlier.timestamp) / 1000 for earlier, later in zip(epochs, epochs[1:])]
    return {"images_per_s": statistics.median(m.value for m in epochs), "epoch_seconds": statistics.median(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="runs each way, alternately")
    parser.add_argument("--in-place-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="overrides for cifar.train (3 epochs or more)")
    args = parser.parse_args()
    if args.in_place_child:
        train_in_place(args.overrides)
        return
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(2 * args.rounds):
            way = WAYS[index % 2]
            results[way].append(run_once(way, args.overrides, Path(tmp), index))
    print(f"\n{' '.join(args.overrides)}: {args.rounds} runs each way, alternately\n")
    print("| checkpoints written | images/s (training steps) | epoch seconds (with checkpoints) |\n|---|---|---|")
    for way in WAYS:
        speeds = ", ".join(f"{r['images_per_s']:.0f}" for r in results[way])
        seconds = ", ".join(f"{r['epoch_seconds']:.3f}" for r in results[way])
        print(f"| {way} | {speeds} | {seconds} |")
    medians = {way: {key: statistics.median(r[key] for r in results[way]) for key in results[way][0]} for way in WAYS}
    background, in_place = medians["background"], medians["in place"]
    print(f"\nin place / in the background (medians): images/s "
          f"{in_place['images_per_s'] / background['images_per_s']:.2f}x, epoch seconds "
          f"{in_place['epoch_seconds'] / background['epoch_seconds']:.2f}x")


if __name__ == "__main__":
    main()
