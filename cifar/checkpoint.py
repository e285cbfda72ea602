"""Checkpoints in the run's output directory, each written to a temp file then renamed."""

from __future__ import annotations

import copy
import logging
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cifar.errors import CheckpointError, ConfigError, first_line, os_reason
from cifar.files import atomic_write


log = logging.getLogger(__name__)


def nothing_to_resume(last: Path) -> ConfigError:
    """The error of ``trainer.resume=true`` where the run's ``last.pt`` does not exist."""
    return ConfigError(f"trainer.resume=true but {last} does not exist: set hydra.run.dir to the interrupted run's "
                       "output dir, or drop trainer.resume")


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all: a failed write leaves the previous file as it was.

    It is streamed into a temp file, not serialised in memory first: file writes let go of the
    interpreter, so a save in ``Writer``'s thread hardly slows the training thread.
    """
    write_errors: list[OSError] = []
    try:
        atomic_write(path, lambda f: torch.save(state, _KeepingWriteErrors(f, write_errors)))
    except (OSError, RuntimeError) as err:
        error = write_errors[0] if write_errors else err  # torch's zip writer makes them opaque RuntimeErrors
        if not isinstance(error, OSError):
            raise
        raise CheckpointError(
            f"could not write checkpoint {path} ({os_reason(error)}): free some disk space or set "
            f"hydra.run.dir (hydra.sweep.dir with -m) to a writable place; the previous {path.name}, if any, is intact"
        ) from error


class _KeepingWriteErrors:
    """A file whose ``write`` adds each OSError it raises (a full disk) to ``errors``."""

    def __init__(self, file: BinaryIO, errors: list[OSError]) -> None:
        self._file, self._errors = file, errors

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self._errors.append(err)
            raise

    def flush(self) -> None:
        self._file.flush()


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state saved at ``path``; a file that torch cannot read (damaged in a copy, say, or no
    checkpoint at all) is a CheckpointError, which callers complete with their fix."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # torch.load's words for it: its unpickler's
        raise CheckpointError(f"{path} is not a readable checkpoint (not the zip archive that torch.save writes: "
                              "another kind of file, or a copy cut short)")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch.load fails on such a file with many error types
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(err)})") from err


class Writer:
    """Writes each epoch's checkpoints in a background thread while the next epoch trains.

    ``submit`` copies the states' tensors to host memory (milliseconds: a snapshot that training may
    go on changing), then one thread serialises and writes them with ``save``, in order. At most one
    epoch's files are in flight: ``submit`` first waits for the previous epoch's. A failed write
    raises its CheckpointError at the next ``submit`` or at the end of the ``with`` block.

    ``submit(files, write=False)`` only keeps the copies (``trainer.checkpoint_every``): the next
    ``submit`` that writes writes them too, a path submitted again taking its newer state, and so does
    the end of the block. A block left by an exception (an interrupt) still waits for the files in
    flight and writes the kept ones, so that the last epoch submitted is the one on disk.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._in_flight: Future[None] | None = None
        self._kept: dict[Path, dict[str, Any]] = {}

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        try:
            self.wait()
            _save_all(self._kept)
        except Exception as error:
            if exc_type is None:
                raise
            log.warning("%s", error)  # raising it would hide the exception that ends the block
        finally:
            self._thread.shutdown()

    def submit(self, files: dict[Path, dict[str, Any]], write: bool = True) -> None:
        if write:
            self.wait()
        self._kept.update({path: on_host(state) for path, state in files.items()})
        if write:
            self._in_flight = self._thread.submit(_save_all, self._kept)
            self._kept = {}

    def wait(self) -> None:
        """Return once the files in flight are written; raise the error of a write that failed."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()


def _save_all(files: dict[Path, dict[str, Any]]) -> None:
    for path, state in files.items():
        save(path, state)


def on_host(obj: Any) -> Any:
    """``obj`` with each tensor in its dicts, lists and tuples replaced by a copy in host memory, the
    same strides and dtype; the containers are copied too (a state_dict keeps its ``_metadata``)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        copied = copy.copy(obj)
        for key, value in obj.items():
            copied[key] = on_host(value)
        return copied
    if isinstance(obj, list):
        return [on_host(value) for value in obj]
    if type(obj) is tuple:
        return tuple(on_host(value) for value in obj)
    return obj
