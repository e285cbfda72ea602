"""The DVC version of the data a run trains on, recorded as the run's ``dvc.data_hash`` tag.

For a directory, the hash comes from the ``.dvc`` file that tracks it or one of its parents
(``data/raw.dvc`` for ``data/raw``). For a file, it is the md5 of its content, which is how DVC
hashes a file: the value ``dvc.lock`` lists for a pipeline output such as
``data/processed/cifar10.npz``, or a ``.dvc`` file for an added archive.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import yaml


def dvc_data_hash(path: str | Path) -> str | None:
    """The DVC hash of the data at ``path``, or None where DVC does not track it."""
    path = Path(path).resolve()
    if path.is_file():
        return file_md5(path)
    for tracked in (p for p in (path, *path.parents) if p.name):
        dvc_file = tracked.with_name(tracked.name + ".dvc")
        if dvc_file.is_file():
            outs = yaml.safe_load(dvc_file.read_text()).get("outs") or [{}]
            return outs[0].get("md5")
    return None


def file_md5(path: Path) -> str:
    """The md5 of the file's bytes: DVC's hash of a file."""
    stat = path.stat()
    return _file_md5(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _file_md5(path: Path, size: int, mtime_ns: int) -> str:
    """md5 of the file's bytes, computed once per process for each size and modification time."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
