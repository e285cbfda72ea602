"""Real servers and clients for the tests (and docs/make_images.py): a free loopback port, a server
process that is always stopped, the system's headless Chromium, and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

# Chromium as root on a machine with no network: the flags that let it start and stay quiet.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args: list[str], ready_url: str, log: Path, timeout: float = 120, **popen) -> Iterator[subprocess.Popen]:
    """Start ``args``; yield once ``ready_url`` answers 200; stop the process (group) at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{args[0]} exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    with urllib.request.urlopen(ready_url, timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{ready_url} did not answer within {timeout} s:\n{log.read_text()}")
                time.sleep(0.5)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


@contextlib.contextmanager
def serving_mlflow(store: str, port: int, log: Path, cwd: Path) -> Iterator[str]:
    """``mlflow server`` of this environment serving ``store`` on loopback ``port``; yields its URL."""
    url = f"http://127.0.0.1:{port}"
    args = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", store, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    with serving(args, f"{url}/health", log, cwd=cwd):
        yield url


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    return path


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        pytest.skip(f"PostgreSQL's {name} is not installed (.ci/run installs Debian's postgresql)")
    return str(found)


@contextlib.contextmanager
def postgres(databases: list[str]) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster in a temp dir on a free loopback port, with ``databases``;
    yields their URLs by name and removes the cluster at the end.

    The server refuses to run as root: as root, it runs as the ``postgres`` user that Debian's package creates.
    """
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # in /tmp, not the tests' temp dir: pytest makes that its user's only, and the server's socket is there
    root = Path(tempfile.mkdtemp(prefix="cifar-postgres-", dir="/tmp"))
    if as_owner:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_owner, _postgres_bin("initdb"), "-D", str(data), "-U", "cifar", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run([*as_owner, _postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        for name in databases:
            subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cifar", name],
                           check=True, capture_output=True)
        yield {name: f"postgresql://cifar@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        subprocess.run([*as_owner, _postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
