"""Passwords in store URLs (``postgresql://user:password@host/db``) kept out of what runs record.

The MLflow store is shared: whoever can open its UI reads every run's params, tags and logged
config. So the password of a URL in the config or on the command line (``mlflow.tracking_uri``,
``hydra.sweeper.storage``) is left out of them, and out of error messages (they end up in logs
and bug reports: :class:`cifar.errors.UserError` leaves it out of each); the database driver can
take it from the environment instead (PostgreSQL: ``PGPASSWORD`` or ``~/.pgpass``).
"""

from __future__ import annotations

import re

# scheme://user:password@, the password ending at the first '@' (as SQLAlchemy reads it); also as
# Hydra writes overrides in a job's .hydra/ files, with each ':' escaped ('\:')
_USER_AND_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*\\?://[^:/@\s\\]*)\\?:[^@\s]*@")


def without_passwords(text: str) -> str:
    """``text`` with the password of every URL in it left out: ``scheme://user@host/...``."""
    return _USER_AND_PASSWORD.sub(r"\1@", text)
