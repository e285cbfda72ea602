"""Store URLs (MLflow tracking stores, Optuna storages) checked before use, so that one that cannot be
used fails in seconds and says what to do: a database driver that is not installed, or a server that
does not answer.

SQLAlchemy imports a URL's driver only when it first connects, deep inside MLflow or Optuna, which
report it as a traceback or as "Failed to import DB access module". And MLflow tries a server that
refuses the connection for minutes before it says so (an HTTP tracking server about 4 minutes, with
its 7 retries; a database about 100 s): a server that is down, or a wrong port, is found here first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

from cifar.errors import first_line, os_reason
from cifar.files import one_process_at_a_time

# How to install a driver, by SQLAlchemy's name for it: the one of the postgres extra (plain postgresql:// URLs)
INSTALL = {"psycopg": "uv sync --extra postgres, or pip install 'psycopg[binary]'"}
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
# URL parameters with which the driver connects elsewhere than the URL's host and port (a Unix socket, ...)
ELSEWHERE_PARAMETERS = {"host", "hostaddr", "service", "unix_socket", "unix_sock"}
ANSWER_WAIT_S = 8.0  # how long a server is tried (a restarting one is back by then) before it is said not to answer


def unusable(url: str) -> str | None:
    """Why ``url`` cannot be used and what to do, or None where it can be tried."""
    return missing_driver(url) or unanswered(url)


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


def unanswered(url: str) -> str | None:
    """What the server of ``url`` answered, where it refused the connection (or its host is unknown,
    or it did not answer) for :data:`ANSWER_WAIT_S`; None where it answered, and where ``url`` names
    no server that this process connects to itself (a file, a Unix socket, a server behind a proxy, or
    where the driver's own settings, such as ``PGPORT``, say otherwise than the URL)."""
    server = _server(url)
    if server is None or (reason := no_answer(*server)) is None:
        return None
    host, port = server
    return f"nothing answers at {host}:{port} ({reason}): start its server, or correct the URL"


def no_answer(host: str, port: int) -> str | None:
    """Why nothing answers at ``host:port`` (connection refused, unknown host, ...), tried for
    :data:`ANSWER_WAIT_S`; None once it answers."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    delay = 0.5
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 1.0)):
                return None
        except OSError as err:
            if time.monotonic() + delay > deadline:
                return os_reason(err)
        time.sleep(delay)
        delay *= 2


def loopback_host(url: str) -> str | None:
    """The host of the server that ``url`` names where it is on this machine's loopback interface: a
    server that jobs on other machines cannot reach."""
    server = _server(url)
    return server[0] if server and is_loopback(server[0]) else None


def is_sqlite(url: str) -> bool:
    """Whether ``url`` is a SQLite database: a file of this machine's, shared with others only through a
    network filesystem."""
    return url.startswith(("sqlite:", "sqlite+"))


@contextlib.contextmanager
def opened_one_at_a_time(url: str) -> Iterator[None]:
    """Held while this process first opens the store ``url``, where it is a SQLite file, so that the processes
    of this machine that open a new file at once create its tables one after another. Otherwise each of them
    created and migrated the tables, and all but one, or all, failed ("table _alembic_tmp_params already
    exists"), the file left half-migrated."""
    if (database := sqlite_file(url)) is None:
        yield
        return
    with one_process_at_a_time(database):
        yield


def sqlite_file(url: str) -> Path | None:
    """The database file of ``url`` as the URL gives it (a relative path is the working directory's), where
    it is a SQLite URL with a file; None for another store and for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database if is_sqlite(url) else None
    return Path(database) if database and database != ":memory:" else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine by any machine's reckoning: ``localhost``, 127.x.x.x, ``::1``. A
    host name is not: a machine's own name may resolve to a loopback address there alone (/etc/hosts)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server(url: str) -> tuple[str, int] | None:
    """The host and port of the server that ``url`` names (an HTTP tracking server, a database)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme in ("http", "https"):
            import requests.utils

            if parts.hostname is None or requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)):
                return None  # the proxy connects: it may reach what this machine cannot
            return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        database = make_url(url)
    except (ArgumentError, ValueError):  # no URL, or a port that is no number: left to the store to report
        return None
    backend = database.get_backend_name()
    if backend not in DATABASE_PORTS or not database.host or database.query.keys() & ELSEWHERE_PARAMETERS:
        return None  # a file (SQLite), a Unix socket, a scheme the store reports as unknown
    libpq_elsewhere = os.environ.get("PGHOSTADDR") or (database.port is None and os.environ.get("PGPORT"))
    if backend == "postgresql" and libpq_elsewhere:
        return None  # libpq connects where these say
    return database.host, database.port or DATABASE_PORTS[backend]
