"""Database URLs (MLflow stores, Optuna storages) whose driver is not installed, named before use.

SQLAlchemy imports a URL's driver only when it first connects, deep inside MLflow or Optuna, which
report it as a traceback or as "Failed to import DB access module"; this says which driver is
missing and how to install it.
"""

from __future__ import annotations

from cifar.errors import first_line

# How to install a driver, by SQLAlchemy's name for it: the one of the postgres extra (plain postgresql:// URLs)
INSTALL = {"psycopg": "uv sync --extra postgres, or pip install 'psycopg[binary]'"}


def missing_driver(url: str) -> str | None:
    """Which driver ``url`` needs and how to install it, where it cannot be imported; None where it can,
    and for what is no database URL (``http://``, ``file:``, a folder)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError):
        return None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        how = INSTALL.get(dialect.driver, f"install it, or name an installed one in the URL ({dialect.name}+DRIVER://)")
        return f"its database driver is not installed ({first_line(err)}): {how}"
    return None
