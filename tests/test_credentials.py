"""Passwords in store URLs: left out of what runs record in MLflow and of the links a sweep prints."""

from __future__ import annotations

import pickle

import mlflow.artifacts
import pytest
from omegaconf import OmegaConf

from cifar import ui
from cifar.credentials import without_passwords
from cifar.errors import ConfigError, UserError
from tests.conftest import all_runs, client_for, sweep_parent_and_children


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://cifar:s3cret@db-host:5432/optuna", "postgresql://cifar@db-host:5432/optuna"),
    ("postgresql+psycopg://cifar:p%40ss:word@db-host/mlflow", "postgresql+psycopg://cifar@db-host/mlflow"),
    ("a=http://u:pw@host:5000/x b=mysql://v:pw2@h/db", "a=http://u@host:5000/x b=mysql://v@h/db"),
    ("postgresql://cifar@db-host/optuna", "postgresql://cifar@db-host/optuna"),  # no password
    ("postgresql://cifar:ab/c+d=@db-host/optuna", "postgresql://cifar@db-host/optuna"),  # base64's '/' too
    ("- tracking_uri=postgresql\\://cifar\\:s3cret@db-host/mlflow", "- tracking_uri=postgresql\\://cifar@db-host/mlflow"),
    ("sqlite:////abs/optuna.db", "sqlite:////abs/optuna.db"),
])
def test_store_urls_lose_their_passwords_and_nothing_else(text, expected):
    assert without_passwords(text) == expected


@pytest.mark.parametrize("error", [UserError, ConfigError])
def test_an_error_for_the_user_leaves_passwords_out_also_once_sent_to_another_process(error):
    err = error("hydra.sweeper.storage=postgresql://cifar:s3cret@db-host/optuna cannot be used: give a URL")
    expected = "hydra.sweeper.storage=postgresql://cifar@db-host/optuna cannot be used: give a URL"
    assert str(err) == expected
    sent = pickle.loads(pickle.dumps(err))  # as the joblib and cluster launchers return a job's error
    assert type(sent) is error and str(sent) == expected


@pytest.mark.slow  # a sweep of 2 jobs: 12 s
def test_a_password_in_a_store_url_is_not_recorded_in_mlflow(cli):
    # MLFLOW_TRACKING_URI (the tests' store) wins over mlflow.tracking_uri, which is only recorded here
    cli("mlflow.tracking_uri=postgresql://cifar:s3cret@db-host/mlflow", "seed=1,2", "trainer.epochs=1",
        "mlflow.log_plots=false", multirun=True)
    client = client_for(cli)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert "mlflow.tracking_uri=postgresql://cifar@db-host/mlflow" in parent.data.tags["mlflow.note.content"]
    for run in (parent, *children):
        assert "s3cret" not in str(run.data.params) + str(run.data.tags), run.info.run_name
    for child in children:
        assert child.data.params["mlflow.tracking_uri"] == "postgresql://cifar@db-host/mlflow"
        logged = [a.path for a in client.list_artifacts(child.info.run_id, "hydra")]
        assert sorted(logged) == ["hydra/config.yaml", "hydra/hydra.yaml", "hydra/overrides.yaml"]
        texts = [mlflow.artifacts.load_text(f"{child.info.artifact_uri}/{path}") for path in logged]
        assert not any("s3cret" in text for text in texts)
        config = OmegaConf.create(texts[0])
        assert config.mlflow.tracking_uri == "postgresql://cifar@db-host/mlflow" and config.seed in (1, 2)


def test_the_ui_link_of_a_tracking_server_leaves_its_password_out():
    assert ui.address("https://me:s3cret@mlflow.example:5000/", "#/runs") == "https://me@mlflow.example:5000/#/runs"
    assert ui.address("postgresql://me:s3cret@db-host/mlflow", "#/runs") == f"{ui.LOCAL_UI}/#/runs"
