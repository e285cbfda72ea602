from __future__ import annotations

import sys

import pytest

from cifar.drivers import missing_driver


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


def test_another_database_without_its_driver_says_to_install_or_name_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymysql", None)
    assert missing_driver("mysql+pymysql://cifar@db-host/mlflow").endswith(
        "): install it, or name an installed one in the URL (mysql+DRIVER://)")
