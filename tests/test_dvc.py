"""The DVC pipeline with the real dvc CLI, in a temp git repo on tiny fake data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests import fakedata
from tests.conftest import FAST, REPO, WRITES_OVER

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
METRICS = Path("results/train/metrics.json")


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def git(cwd: Path, *args: str) -> str:
    return sh(cwd, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args)


@pytest.fixture
def project(tmp_path, tracking_uri):
    """A git + DVC repo holding this project's pipeline and fake raw data, pushed to a local remote.

    Its pipeline config is the project's with FAST's tiny-run overrides; its params.yaml is
    composed by ``dvc exp run`` as a user's would be. Returns (repo, remote, env).
    """
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    for path in ("cifar", "conf", "dvc.yaml", ".gitignore"):
        (shutil.copytree if (REPO / path).is_dir() else shutil.copy)(REPO / path, repo / path)
    pipeline = yaml.safe_load((repo / "conf/pipeline.yaml").read_text())
    for override in FAST:
        key, value = override.split("=")
        group, name = key.split(".")
        pipeline.setdefault(group, {})[name] = yaml.safe_load(value)
    (repo / "conf/pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    fakedata.write_official(repo / "data/raw")
    # `uv run dvc ...` puts the venv first on PATH, so that the stages' `python` is the venv's
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    # DVC_NO_ANALYTICS: no usage report, whose file DVC leaves in the temp dir where it cannot send it
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "DVC_NO_ANALYTICS": "1"}
    git(repo, "init", "-q")
    for args in (["init", "-q"], ["config", "hydra.enabled", "true"], ["config", "hydra.config_name", "pipeline"],
                 ["remote", "add", "-d", "local", str(remote)], ["add", "-q", "data/raw"]):
        sh(repo, *DVC, *args, env=env)
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")  # bytecode is not part of the code dependency
    sh(repo, *DVC, "push", "-q", env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data and pipeline")
    return repo, remote, env


def test_repro_on_a_fresh_clone_gives_the_committed_metrics(project, tmp_path):
    repo, _, env = project
    sh(repo, *DVC, "exp", "run", env=env)  # composes params.yaml, runs prepare and train
    metrics = json.loads((repo / METRICS).read_text())
    assert metrics["epochs_run"] == 2 and 0 < metrics["test/acc"] <= 1
    stats = json.loads((repo / "data/processed/stats.json").read_text())
    assert stats["class_counts"]["train"]["cat"] == 20
    assert "Stage 'train' didn't change" in sh(repo, *DVC, "repro", env=env)  # nothing changed, nothing runs
    # the MLflow run names the DVC version of the data it trained on: the prepare stage's output
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    [decoded] = [o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/processed/cifar10.npz"]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs(
        [client.get_experiment_by_name("cifar").experiment_id],
        filter_string=f"tags.`hydra.output_dir` = '{repo / 'results/train'}'",
    )
    assert run.data.tags["dvc.data_hash"] == decoded["md5"]
    sh(repo, *DVC, "push", "-q", env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    sh(clone, *DVC, "pull", "-q", "data/raw.dvc", env=env)  # the data only: both stages must run again
    out = sh(clone, *DVC, "repro", env=env)
    assert "Running stage 'prepare'" in out and "Running stage 'train'" in out
    assert json.loads((clone / METRICS).read_text()) == metrics  # CPU, seeded: the same numbers
    assert sh(clone, "git", "status", "--porcelain") == "", sh(clone, "git", "diff")  # and the same committed files


def test_exp_run_with_a_hydra_override_changes_the_param_and_the_metrics(project, capsys):
    from PIL import Image

    from cifar import predict

    repo, _, env = project
    sh(repo, *DVC, "exp", "run", env=env)
    baseline = json.loads((repo / METRICS).read_text())
    default_lr = yaml.safe_load((repo / "params.yaml").read_text())["optimizer"]["lr"]
    out = sh(repo, *DVC, "exp", "run", "-S", "optimizer.lr=5e-4", env=env)
    assert "Running stage 'prepare'" not in out  # the data did not change
    assert WRITES_OVER not in out  # the stage's dir is its outputs', the first experiment's in DVC
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["optimizer"]["lr"] == 5e-4 and params["data"]["path"] == "data/processed/cifar10.npz"
    assert json.loads((repo / METRICS).read_text()) != baseline
    shown = json.loads(sh(repo, *DVC, "exp", "show", "--json", env=env))
    assert {default_lr, 5e-4} <= set(values_of(shown, "optimizer", "lr"))  # both experiments, side by side
    # each MLflow run is named after its DVC experiment, whose overrides are in params.yaml, not on its command line
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id],
                              filter_string=f"tags.`hydra.output_dir` = '{repo / 'results/train'}'")
    names = {run.data.tags["dvc.exp_name"]: run.info.run_name for run in runs}
    assert len(names) == 2 and all(key == value for key, value in names.items())
    assert set(names) == set(sh(repo, *DVC, "exp", "list", "--name-only", env=env).split())
    # the first experiment's best.pt, written over by the second's, is refused by run id; DVC brings it back
    [first] = [run for run in runs if run.data.params["optimizer.lr"] == str(default_lr)]
    image = repo / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    by_id = [str(image), "--model", first.info.run_id, "--tracking-uri", client.tracking_uri]
    assert predict.main(by_id) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"wrote over it): restore it with dvc exp apply {first.info.run_name}, or train with "
                        "mlflow.log_model=true to keep its model in MLflow\n"), err
    sh(repo, *DVC, "exp", "apply", first.info.run_name, env=env)
    assert predict.main(by_id) == 0


def values_of(node, parent: str, key: str):
    """Every ``node[...][parent][key]`` in a nested JSON document (``dvc exp show --json``)."""
    if isinstance(node, dict):
        if isinstance(node.get(parent), dict) and key in node[parent]:
            yield node[parent][key]
        for child in node.values():
            yield from values_of(child, parent, key)
    elif isinstance(node, list):
        for child in node:
            yield from values_of(child, parent, key)


def test_an_experiment_run_in_a_temp_copy_logs_to_the_repos_mlflow_store(project, capsys):
    from PIL import Image

    from cifar import predict

    repo, _, env = project
    env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}  # MLflow's default store, mlflow.db
    sh(repo, *DVC, "exp", "run", "--temp", "-n", "in-a-copy", env=env)  # in .dvc/tmp/exps/standalone/tmpXXX
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar")  # made by the run in the copy
    assert experiment.artifact_location == str(repo / "mlruns")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["dvc.exp_name"] == run.info.run_name == "in-a-copy"
    assert [p.parent.name for p in (repo / "mlruns").glob("*/artifacts")] == [run.info.run_id]
    assert not list((repo / ".dvc/tmp/exps").rglob("mlflow.db"))  # the copy is gone
    # the run logged no model (FAST), and its output dir went with the copy: DVC has its best.pt
    image = repo / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    assert predict.main([str(image), "--model", run.info.run_id, "--tracking-uri", client.tracking_uri]) == 2
    assert capsys.readouterr().err == (
        f"cifar.predict: error: --model {run.info.run_id}: the run logged no model and its best.pt is not on this "
        "machine: restore it with dvc exp apply in-a-copy (or give its path), or train with mlflow.log_model=true\n")
    sh(repo, *DVC, "exp", "apply", "in-a-copy", env=env)  # where the run's tag says: the copy's path, in the repo
    assert run.data.tags["hydra.output_dir"] == str(repo / "results/train")
    assert predict.main([str(image), "--model", str(repo / "results/train/best.pt"), "--json"]) == 0
    by_path = capsys.readouterr().out
    assert predict.main([str(image), "--model", run.info.run_id, "--tracking-uri", client.tracking_uri, "--json"]) == 0
    assert capsys.readouterr().out == by_path
    # the tag names the experiment's best.pt as DVC hashed it
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    [best] = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "results/train/best.pt"]
    assert run.data.tags["best_checkpoint.md5"] == best["md5"]
