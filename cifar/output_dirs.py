"""Output dirs named by the time a run or sweep starts (Hydra's defaults: ``outputs/<date>/<time>`` and
``multirun/<date>/<time>``), each one made by a single run or sweep.

Two runs or sweeps started in the same second, as a script that starts several at once does, would
otherwise share one dir and write over each other's checkpoints, logs and sweep file. The second one
to make the dir takes ``<time>_2``, the third ``<time>_3``, and so on. A dir without the time in its
name, such as one given on the command line, is used as it is: a resumed run's, or a pipeline stage's
that writes to the same dir each time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cifar.errors import AbortRun, ConfigError
from cifar.files import claim, first_missing, remove_made

log = logging.getLogger(__name__)

TIME_RESOLVER = "${now:"


class RunDirCallback(Callback):
    """Makes a single run's time-named dir before Hydra writes to it (``hydra.callbacks.run_dir``), and removes it
    where the run was refused for the user's input (a data path with no data, no CUDA, too few images) before
    its MLflow run began: the dir would hold only Hydra's files, the config and the log, of a run that never was."""

    made: Path | None = None  # the topmost folder made for the run (outputs/<date> for a day's first run)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_time_named(config.hydra.run):
            with contextlib.suppress(OSError):  # an unwritable place: Hydra's own mkdir fails, said in one line
                self.made = make_output_dir(config, "run")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cifar import tracking

        refused = isinstance(sys.exc_info()[1], AbortRun)  # Hydra calls this in a finally
        if self.made is None or not refused or tracking.started_a_run():
            return
        run_dir = Path(config.hydra.run.dir)
        hydra_files = {config.hydra.output_subdir, f"{config.hydra.job.name}.log"}  # .hydra/ and train.log
        with contextlib.suppress(OSError):  # the log still open, where that keeps it (Windows): the dir stays
            if {path.name for path in run_dir.iterdir()} <= hydra_files:
                shutil.rmtree(run_dir)
                remove_made(run_dir.parent, self.made)


def make_output_dir(config: DictConfig, mode: str) -> Path | None:
    """Make ``hydra.<mode>.dir`` (``mode``: run or sweep) and its parents. A time-named dir is one this
    process makes itself: where another run or sweep made it first, the first free ``<dir>_2``, ``<dir>_3``,
    ... is made instead, and the config points there. Returns the topmost folder made, None where none was."""
    wanted = Path(config.hydra[mode].dir)
    made = first_missing(wanted)
    if not is_time_named(config.hydra[mode]):
        wanted.mkdir(parents=True, exist_ok=True)
        return made
    wanted.parent.mkdir(parents=True, exist_ok=True)
    path = wanted
    for taken in itertools.count(2):
        try:
            path.mkdir()
            break
        except FileExistsError:
            path = wanted.with_name(f"{wanted.name}_{taken}")
    if path == wanted:
        return made
    log.info("%s was made by another %s started in the same second: this one writes to %s", wanted, mode, path)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[mode].dir = str(path)
        config.hydra.overrides.hydra.append(f"hydra.{mode}.dir={path}")  # the jobs' configs are composed again
    return made if made is not None and made != wanted.absolute() else path.absolute()


def claim_named_dir(config: DictConfig, mode: str) -> Path | None:
    """Claim ``hydra.<mode>.dir`` (``mode``: run or sweep) for this process where it is named on the command line
    (:func:`cifar.files.claim`; a time-named dir is this process's own), to be released when the run or sweep ends
    (:func:`cifar.files.release_claim`): the dir claimed, None for none; a ConfigError where another run or sweep of
    this machine holds it. That one may have started moments ago, before its MLflow run, by which a run or sweep
    still running there is refused too (on another machine as well)."""
    if is_time_named(config.hydra[mode]):
        return None
    output_dir = Path(config.hydra[mode].dir)
    if not claim(output_dir):
        raise ConfigError(f"hydra.{mode}.dir={output_dir} is in use by another {mode} started on this machine: give "
                          f"this {mode} another hydra.{mode}.dir, or stop that {mode} (Ctrl-C or SIGTERM) first")
    return output_dir


def latest_below(folder: Path, marker: str, kind: str, option: str) -> str | None:
    """For a folder of output dirs (``outputs/``, ``multirun/<date>/``) that ``option`` was given in place of one of
    them: what it is, and the latest of the dirs below it that hold ``marker`` (``kind``'s: a run's best.pt, a sweep's
    sweep file) to give instead. None where none is one or two levels below."""
    found = [file.parent for pattern in (f"*/{marker}", f"*/*/{marker}") for file in folder.glob(pattern)]
    if not found:
        return None
    latest = max(found, key=lambda output_dir: (output_dir / marker).stat().st_mtime)
    count = f"{len(found)} {kind}s" if len(found) > 1 else f"a {kind}"
    return (f"{option} {folder} is a folder of {count}, not a {kind}'s dir: give one, such as the latest: "
            f"{option} {latest}")


def is_time_named(dir_node: DictConfig) -> bool:
    """Whether ``dir_node.dir`` (``hydra.run`` or ``hydra.sweep``) is named by Hydra's ``now`` resolver."""
    return TIME_RESOLVER in str(OmegaConf.to_container(dir_node, resolve=False)["dir"])
