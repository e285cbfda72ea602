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


@pytest.mark.parametrize("module,url", [("pymysql", "mysql+pymysql://cifar@db-host/mlflow"),
                                        ("psycopg2", "postgresql+psycopg2://cifar@db-host/mlflow")])
def test_another_driver_that_is_missing_is_to_install_or_to_replace_in_the_url(module, url, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    scheme = url.split("+")[0]
    assert missing_driver(url).endswith(f"): install it, or name an installed one in the URL ({scheme}+DRIVER://)")
