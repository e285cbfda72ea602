"""How the checkpoints are written, in real training runs: in the background (the trainer's
``checkpoint.Writer``), in place, and with ``--every N`` in the background every N epochs
(``trainer.checkpoint_every=N``). ``python -m cifar.train OVERRIDES`` each way in turn for ``--rounds``
rounds, into one fresh MLflow store. In place, ``Writer.submit`` saves the epoch's files before it returns,
as the trainer did before the writer. Epoch 1, which holds the start, is left out. For each run it prints
the training steps' images/s over its epochs (``train/images_per_s``, which leaves the checkpoints out: the
images over the sum of the epochs' train seconds) and the mean epoch wall time with its checkpoints (the
time between two epochs' metrics being logged), then each way's medians and their ratios to the background
writes of every epoch. ``bench/checkpoint_cost.py`` weighs writing in place or in the background on the
CPU with synthetic Python-bound epochs.

    python bench/checkpoint_ab.py --rounds 2 --every 5 experiment=resnet18_onecycle trainer.epochs=10 \\
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

BACKGROUND = "background"
IN_PLACE = "in place"


def train_in_place(overrides: list[str]) -> None:
    """``cifar.train`` in this process, with each epoch's checkpoints written before the next epoch starts."""
    from cifar import checkpoint

    def submit_in_place(writer: checkpoint.Writer, files: dict, write: bool = True) -> None:
        writer.wait()
        checkpoint._save_all({path: checkpoint.on_host(state) for path, state in files.items()})

    checkpoint.Writer.submit = submit_in_place
    sys.argv = ["cifar.train", *overrides]
    runpy.run_module("cifar.train", run_name="__main__", alter_sys=True)


def ways(every: int | None) -> dict[str, tuple[list[str], list[str]]]:
    """Each way's entry point and the overrides it adds."""
    found = {BACKGROUND: (["-m", "cifar.train"], []), IN_PLACE: ([__file__, "--in-place-child"], [])}
    if every is not None:
        found[f"background, every {every} epochs"] = (["-m", "cifar.train"], [f"trainer.checkpoint_every={every}"])
    return found


def run_once(entry: list[str], overrides: list[str], workdir: Path, index: int) -> dict[str, float]:
    """Train once; the run's training images/s and mean epoch wall seconds, epoch 1 left out."""
    client, experiments = train_into_store(workdir, entry, [*overrides, f"hydra.run.dir={workdir / f'run{index}'}"])
    run = client.search_runs(experiments, order_by=["attributes.start_time DESC"], max_results=1)[0]
    epochs = sorted(client.get_metric_history(run.info.run_id, "train/images_per_s"), key=lambda m: m.step)
    if len(epochs) < 3:
        sys.exit("checkpoint_ab: a run needs 3 epochs or more (trainer.epochs=3): the first one's wall time "
                 "holds the start")
    walls = [(later.timestamp - earlier.timestamp) / 1000 for earlier, later in zip(epochs, epochs[1:])]
    return {"images_per_s": statistics.harmonic_mean([m.value for m in epochs[1:]]),  # each epoch: as many images
            "epoch_seconds": statistics.mean(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="runs each way, in turn")
    parser.add_argument("--every", type=int, help="also write in the background every this many epochs")
    parser.add_argument("--in-place-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="overrides for cifar.train (3 epochs or more)")
    args = parser.parse_args()
    if args.in_place_child:
        train_in_place(args.overrides)
        return
    compared = ways(args.every)
    results: dict[str, list[dict[str, float]]] = {way: [] for way in compared}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(len(compared) * args.rounds):
            way = list(compared)[index % len(compared)]
            entry, added = compared[way]
            results[way].append(run_once(entry, [*args.overrides, *added], Path(tmp), index))
    print(f"\n{' '.join(args.overrides)}: {args.rounds} run{'s' * (args.rounds != 1)} each way, in turn\n")
    print("| checkpoints written | images/s (training steps) | epoch seconds (with checkpoints) | "
          "images/s, epoch seconds: median / background's |\n|---|---|---|---|")
    medians = {way: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for way, runs in results.items()}
    for way, runs in results.items():
        speeds = ", ".join(f"{r['images_per_s']:.0f}" for r in runs)
        seconds = ", ".join(f"{r['epoch_seconds']:.3f}" for r in runs)
        ratios = (f"{medians[way]['images_per_s'] / medians[BACKGROUND]['images_per_s']:.2f}x, "
                  f"{medians[way]['epoch_seconds'] / medians[BACKGROUND]['epoch_seconds']:.2f}x")
        print(f"| {way} | {speeds} | {seconds} | {ratios} |")


if __name__ == "__main__":
    main()
