"""How to continue an interrupted run or sweep: the line ``python -m cifar.train`` prints on Ctrl-C or SIGTERM.

Hydra lets go of its config before :func:`cifar.train.main` reports the interrupt, so a Hydra
callback (``hydra.callbacks.continuation``) notes where the run or sweep writes when it starts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifar.files import LAST
from cifar.sweeper import is_optuna_sweep

RESUME = "trainer.resume"


@dataclass(frozen=True)
class Started:
    kind: str  # "run", "sweep" or "study" (an Optuna sweep)
    output_dir: str  # hydra.run.dir, or hydra.sweep.dir, as resolved when it started


class ContinuationCallback(Callback):
    started: Started | None = None  # the run or sweep that started last in this process

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        ContinuationCallback.started = Started("run", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        kind = "study" if is_optuna_sweep(config.hydra) else "sweep"
        ContinuationCallback.started = Started(kind, str(config.hydra.sweep.dir))


def how_to_continue(args: list[str]) -> str:
    """What the interrupted run or sweep of command-line ``args`` kept, and the command that continues it."""
    started = ContinuationCallback.started
    if started is None:
        return "nothing had started"
    if started.kind == "study":
        return f"finished trials are kept; the same command finishes the study: {train_command(args)}"
    if started.kind == "sweep":
        return f"finished jobs are kept; continue with: {train_command(_in_dir(args, 'hydra.sweep.dir', started))}"
    if not (Path(started.output_dir) / LAST).exists():
        return "no epoch had finished, so there is no checkpoint to continue from"
    return (f"the last epoch's checkpoint ({LAST}) is kept; continue with: "
            f"{train_command(_in_dir(args, 'hydra.run.dir', started))}")


def resumed(overrides: list[str], dropped: tuple[str, ...] = ()) -> list[str]:
    """``overrides`` with ``trainer.resume=true`` in place of any value they gave it, and without those of the
    keys ``dropped``."""
    replaced = {RESUME, *dropped}
    return [*(o for o in overrides if o.split("=", 1)[0] not in replaced), f"{RESUME}=true"]


def _in_dir(args: list[str], dir_key: str, started: Started) -> list[str]:
    """``args`` resumed, with the output dir in place of any they set already."""
    return [*resumed(args, dropped=("hydra.run.dir", "hydra.sweep.dir")), f"{dir_key}={started.output_dir}"]


def train_command(args: list[str]) -> str:
    """The ``python -m cifar.train`` command line of ``args``, quoted for a shell."""
    return shlex.join(["python", "-m", "cifar.train", *args])
