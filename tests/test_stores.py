from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from cifar.stores import missing_driver, unanswered, unusable
from tests import servers


@pytest.mark.parametrize("url", [
    "sqlite:///mlflow.db", "sqlite:////tmp/optuna.db", "http://127.0.0.1:5000", "https://mlflow.example.com",
    "file:///tmp/mlruns", "./mlruns", "databricks",
])
def test_urls_whose_driver_imports_or_that_name_no_database_pass(url):
    assert missing_driver(url) is None


def test_a_postgresql_url_without_its_driver_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    reason = missing_driver("postgresql://cifar@db-host:5432/mlflow")
    assert reason.startswith("its database driver is not installed (")
    assert reason.endswith("): uv sync --extra postgres, or pip install 'psycopg[binary]'")


@pytest.mark.parametrize("module,url", [("pymysql", "mysql+pymysql://cifar@db-host/mlflow"),
                                        ("psycopg2", "postgresql+psycopg2://cifar@db-host/mlflow")])
def test_another_driver_that_is_missing_is_to_install_or_to_replace_in_the_url(module, url, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    scheme = url.split("+")[0]
    assert missing_driver(url).endswith(f"): install it, or name an installed one in the URL ({scheme}+DRIVER://)")


@pytest.fixture
def free_port():
    """A port of 127.0.0.1 that nothing listens on: a connection to it is refused."""
    return servers.free_port()


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_a_server_that_answers_passes_and_one_that_refuses_is_named_with_the_fix(scheme, free_port, no_proxy,
                                                                                 monkeypatch):
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert unanswered(f"{scheme}://cifar@127.0.0.1:{server.getsockname()[1]}/db") is None
    assert unanswered(f"{scheme}://cifar:s3cret@127.0.0.1:{free_port}/db") == (
        f"nothing answers at 127.0.0.1:{free_port} (Connection refused): start its server, or correct the URL")


def test_a_missing_driver_is_named_without_trying_the_server(free_port, no_proxy, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)
    assert unusable(f"postgresql://cifar@127.0.0.1:{free_port}/db").startswith("its database driver is not installed")
    assert unusable(f"http://127.0.0.1:{free_port}").startswith(f"nothing answers at 127.0.0.1:{free_port} (")


def test_a_server_that_starts_within_the_wait_is_waited_for(free_port, no_proxy):
    def start_late():
        time.sleep(1.5)  # the first attempts are refused
        with socket.create_server(("127.0.0.1", free_port)) as server:
            server.accept()[0].close()

    late = threading.Thread(target=start_late)
    late.start()
    try:
        assert unanswered(f"http://127.0.0.1:{free_port}") is None
    finally:
        late.join()


@pytest.mark.parametrize("url", [
    "sqlite:///mlflow.db", "file:///tmp/mlruns", "./mlruns", "databricks", "postgresql://cifar@/mlflow?host=/run/pg",
    "postgresql://cifar@localhost/mlflow?host=/run/pg", "mysql+pymysql://cifar@localhost/mlflow?unix_socket=/run/my.sock",
    "http://127.0.0.1:port", "mlflow+unknown://127.0.0.1:1",
])
def test_urls_that_name_no_server_to_connect_to_are_not_tried(url, monkeypatch):
    def connect(*args, **kwargs):
        raise AssertionError(f"connected to {args}")

    monkeypatch.setattr(socket, "create_connection", connect)
    assert unanswered(url) is None


def test_a_database_whose_port_or_address_libpq_takes_from_the_environment_is_left_to_it(free_port, monkeypatch):
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)
    monkeypatch.setenv("PGPORT", str(free_port))
    assert unanswered("postgresql://cifar@127.0.0.1/mlflow") is None
    assert unanswered(f"postgresql://cifar@127.0.0.1:{free_port}/mlflow") is not None  # the URL's port wins
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    assert unanswered(f"postgresql://cifar@db-host:{free_port}/mlflow") is None


def test_a_tracking_server_behind_a_proxy_is_left_to_the_proxy(free_port, no_proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    assert unanswered(f"http://mlflow.internal:{free_port}") is None
    monkeypatch.setenv("NO_PROXY", "mlflow.internal")  # connected to directly again: an unknown host
    monkeypatch.setattr("cifar.stores.ANSWER_WAIT_S", 0)
    reason = unanswered(f"http://mlflow.internal:{free_port}")
    assert reason.startswith(f"nothing answers at mlflow.internal:{free_port} (")


@pytest.mark.parametrize("uri", ["./mlruns", "/srv/mlruns", "file:///srv/mlruns", "file:./mlruns"])
def test_a_file_store_that_mlflow_refuses_is_named_with_the_database_to_use_unless_allowed(uri, monkeypatch):
    from cifar.tracking import refused_file_store

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    reason = refused_file_store(uri)
    assert reason.startswith("it is a file store (a folder of runs), which MLflow 3 refuses by default: use a "
                             "database, such as sqlite:///mlflow.db (mlflow migrate-filestore --source FOLDER")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert refused_file_store(uri) is None


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "http://127.0.0.1:5000", "postgresql://db/mlflow",
                                 "databricks"])
def test_a_store_that_is_no_file_store_is_not_refused_as_one(uri):
    from cifar.tracking import refused_file_store

    assert refused_file_store(uri) is None


def test_the_report_on_a_file_store_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch):
    from cifar import report

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert report.main(["--tracking-uri", str(tmp_path / "mlruns")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar.report: error: the MLflow store {tmp_path / 'mlruns'} cannot be read: it is a "
                          "file store") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
