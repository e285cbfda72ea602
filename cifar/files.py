"""Writing files so that a crash never leaves a half-written one in place, and processes that start at
once do not all make the same one, nor write in the same output dir."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

if TYPE_CHECKING:
    from filelock import BaseFileLock

# A run's checkpoints in its output dir: the weights of its best epoch, and all that resuming needs. Named
# here, away from torch, for what must not import it: saying how to continue a run interrupted in its import.
BEST = "best.pt"
LAST = "last.pt"


def first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (made absolute) that does not exist: the first that making ``path`` with its
    parents makes; None where ``path`` exists."""
    return next((d for d in reversed([path.absolute(), *path.absolute().parents]) if not d.exists()), None)


def remove_made(folder: Path, made: Path | None) -> None:
    """Remove the folders made from ``made`` (:func:`first_missing`) down to ``folder``, from ``folder`` up, while
    empty."""
    if made is None:
        return
    for parent in [folder.absolute(), *folder.absolute().parents]:
        try:
            parent.rmdir()  # only an empty folder: whatever another process wrote there stays
        except OSError:
            return
        if parent == made:
            return


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temp file beside ``path``, fsync it, then rename it over ``path``. The file gets the
    permissions that ``open(path, "w")`` gives a new file (the umask's), where ``mkstemp``'s are the owner's only:
    a data cache, checkpoint or report that other users or an MLflow server read stays readable to them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def one_process_at_a_time(path: Path) -> Iterator[None]:
    """Held by one process of this machine at a time for ``path``: while it makes ``path`` (a cache, a
    store's tables), the others wait, then find it made. The lock is a file in the temp dir, named by a hash
    of ``path``, which it leaves there (``filelock``), writable by every user: another user's process that
    makes the same ``path`` (a shared data cache) takes it in turn, where filelock's 0644 refused it."""
    from filelock import FileLock

    with FileLock(_lock_file(path), mode=0o666):
        yield


def claim(path: Path) -> bool:
    """Claim ``path`` (an output dir) for this process, without waiting: False where another process holds the
    claim, which one process of this machine holds at a time, until :func:`release_claim` or its end (the system
    lets go of it then, killed too). The lock is this module's, not its caller's: launchers pickle the callbacks
    that claim, and a lock does not pickle."""
    from filelock import FileLock, Timeout

    lock = FileLock(_lock_file(path, "dir-"), mode=0o666, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    _claims[path] = lock
    return True


def release_claim(path: Path) -> None:
    """Let go of this process's claim on ``path`` (:func:`claim`), where it holds one."""
    if (lock := _claims.pop(path, None)) is not None:
        lock.release()


_claims: dict[Path, BaseFileLock] = {}  # this process's, by the path claimed


def _lock_file(path: Path, kind: str = "") -> Path:
    """The lock file of ``path`` for ``kind`` of lock, in the temp dir, named by a hash of ``path``."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cifar-{kind}{key}.lock"
