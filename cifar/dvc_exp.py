"""A run that DVC started as the train stage of an experiment (``dvc exp run``).

DVC runs a queued experiment (``dvc exp run --queue``, then ``dvc queue start``) and one run with
``--temp`` in a temp copy of the repo (its committed files and their changes) under
``.dvc/tmp/exps/``, and deletes the copy once it has collected the stage's outputs. A SQLite store
in the copy (MLflow's default, ``mlflow.db`` in the working directory) would go with it, and the
run with the store. So a SQLite file in the copy is taken from the same place in the repo itself,
which DVC gives its stages as ``DVC_ROOT``: the run logs where it would have from the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

from cifar.stores import is_sqlite, sqlite_file

ROOT_VAR = "DVC_ROOT"  # the repo's root, also for an experiment that runs in a temp copy of it
EXP_NAME_VAR = "DVC_EXP_NAME"  # the experiment's name, as `dvc exp show` lists it
EXP_NAME_TAG = "dvc.exp_name"
TEMP_COPIES = Path(".dvc", "tmp", "exps")  # where DVC makes its temp copies of the repo


def in_repo(path: Path) -> Path:
    """``path`` (relative to the working directory), where it is in the temp copy of the repo that this
    process runs in, as the same path in the repo itself (absolute); else ``path`` itself."""
    if (found := _temp_copy()) is None:
        return path
    copy, root = found
    try:
        return root / (Path.cwd() / path).resolve().relative_to(copy)
    except ValueError:
        return path


def store_in_repo(store_url: str) -> str:
    """``store_url``, with a SQLite file in the temp copy that this process runs in moved to the repo itself
    (MLflow gives its default, ``mlflow.db``, as an absolute path: the copy's)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = sqlite_file(store_url)
    except ArgumentError:
        return store_url  # left to the store to report
    if database is None or (moved := in_repo(database)) == database:
        return store_url
    return make_url(store_url).set(database=str(moved)).render_as_string(hide_password=False)


def artifact_location(store_url: str) -> str | None:
    """Where a new experiment made in the SQLite store ``store_url`` from a temp copy keeps its runs' files:
    in the repo's ``mlruns``, as from the repo itself (MLflow's default, ``./mlruns``, is in the copy);
    None (MLflow's default) elsewhere."""
    default = Path("mlruns")
    moved = in_repo(default)
    return str(moved) if is_sqlite(store_url) and moved != default else None


def runs_a_stage() -> bool:
    """Whether DVC started this process as a stage of its pipeline (``dvc repro``, ``dvc exp run``)."""
    return bool(os.environ.get(ROOT_VAR))


def experiment_name() -> str | None:
    """The name of the DVC experiment that this process runs a stage of (``dvc exp run``), if any."""
    return os.environ.get(EXP_NAME_VAR) or None


def experiment_tags() -> dict[str, str]:
    return {EXP_NAME_TAG: name} if (name := experiment_name()) else {}


def _temp_copy() -> tuple[Path, Path] | None:
    """The temp copy of the repo that this process runs in, and the repo's root; None outside such a copy."""
    if not (root := os.environ.get(ROOT_VAR)):
        return None
    root, cwd = Path(root).resolve(), Path.cwd().resolve()
    copies = root / TEMP_COPIES  # a copy is a DVC repo of its own, some levels down (standalone/tmpXXX for --temp)
    copy = next((d for d in (cwd, *cwd.parents) if d.is_relative_to(copies) and (d / ".dvc").is_dir()), None)
    return (copy, root) if copy is not None else None
