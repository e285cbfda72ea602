from __future__ import annotations

import hashlib
import subprocess

from cifar.tracking import git_state, uncommitted_diff
from cifar.versioning import dvc_data_hash


def test_a_directory_takes_the_hash_of_the_dvc_file_that_tracks_it_or_a_parent(tmp_path):
    (tmp_path / "data/raw/cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "data/raw.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  size: 10\n  nfiles: 2\n  path: raw\n")
    assert dvc_data_hash(tmp_path / "data/raw") == "0123abcd.dir"
    assert dvc_data_hash(tmp_path / "data/raw/cifar-10-batches-py") == "0123abcd.dir"
    assert dvc_data_hash(tmp_path / "data") is None  # nothing tracks data/ itself


def test_a_file_takes_the_md5_of_its_content_as_dvc_does(tmp_path):
    decoded = tmp_path / "cifar10.npz"
    decoded.write_bytes(b"x" * 3_000_000)
    assert dvc_data_hash(decoded) == hashlib.md5(b"x" * 3_000_000).hexdigest()
    decoded.write_bytes(b"changed")  # a new version of the file gets its own hash
    assert dvc_data_hash(decoded) == hashlib.md5(b"changed").hexdigest()


def test_the_code_of_a_run_is_its_commit_and_the_diff_of_its_tracked_files_and_new_modules(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    def now(read):  # both read the checkout once per process: forget what they read
        git_state.cache_clear()
        uncommitted_diff.cache_clear()
        return read(tmp_path)

    assert now(git_state) == {"git.commit": "unknown", "git.dirty": "unknown"}  # no checkout
    assert now(uncommitted_diff) == ""
    git("init", "-q")
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    git("add", "train.py")
    git("commit", "-qm", "first")
    (tmp_path / "notes.txt").write_text("untracked\n")  # not the code of the run
    state = now(git_state)
    assert len(state["git.commit"]) == 40 and state["git.dirty"] == "false"
    assert now(uncommitted_diff) == ""

    (tmp_path / "train.py").write_text("lr = 0.2\n")
    assert now(git_state) == {**state, "git.dirty": "true"}
    diff = now(uncommitted_diff)
    assert "-lr = 0.1\n+lr = 0.2\n" in diff and "notes.txt" not in diff
    git("stash", "-q")  # back to the commit: the diff applies to it and gives the run's code
    (tmp_path / "run.diff").write_text(diff)
    git("apply", "run.diff")
    assert (tmp_path / "train.py").read_text() == "lr = 0.2\n"

    git("checkout", "-q", "train.py")
    module = tmp_path / "cifar" / "layers.py"  # a module of the package that git does not track yet
    module.parent.mkdir()
    module.write_text("width = 64\n")
    (tmp_path / "cifar" / "__pycache__").mkdir()
    (tmp_path / ".gitignore").write_text("__pycache__/\nrun.diff\n")
    (tmp_path / "cifar" / "__pycache__" / "layers.pyc").write_bytes(b"\0")  # ignored: not the code
    assert now(git_state) == {**state, "git.dirty": "true"}  # where it said false: the run's code not in git
    diff = now(uncommitted_diff)
    assert "+++ b/cifar/layers.py\n" in diff and "notes.txt" not in diff and "pyc" not in diff
    module.unlink()
    (tmp_path / "run.diff").write_text(diff)
    git("apply", "run.diff")
    assert module.read_text() == "width = 64\n"


def test_a_sqlite_store_in_a_dvc_experiments_temp_copy_is_the_repos_own(tmp_path, monkeypatch):
    import mlflow
    from omegaconf import OmegaConf

    from cifar import dvc_exp
    from cifar.tracking import store_uri

    repo = tmp_path / "repo"
    copy = repo / ".dvc/tmp/exps/standalone/tmpabc123"  # dvc exp run --temp's (a queued one's: exps/tmpXXX)
    (copy / ".dvc").mkdir(parents=True)
    (copy / "stage").mkdir()
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    default = OmegaConf.create({"tracking_uri": None})
    assert mlflow.get_tracking_uri() == f"sqlite:///{copy / 'mlflow.db'}"  # MLflow's default: the copy's
    assert store_uri(default) == f"sqlite:///{repo / 'mlflow.db'}"
    assert dvc_exp.artifact_location(store_uri(default)) == str(repo / "mlruns")
    moved = {"sqlite:///runs/mlflow.db": f"sqlite:///{repo / 'runs/mlflow.db'}",
             f"sqlite:///{copy / 'a.db'}": f"sqlite:///{repo / 'a.db'}",
             f"sqlite:///{tmp_path / 'shared.db'}": f"sqlite:///{tmp_path / 'shared.db'}",  # not in the copy
             "sqlite:///:memory:": "sqlite:///:memory:",
             "postgresql://u@db-host/mlflow": "postgresql://u@db-host/mlflow",
             "http://tracking:5000": "http://tracking:5000"}
    assert {url: store_uri(OmegaConf.create({"tracking_uri": url})) for url in moved} == moved
    assert dvc_exp.artifact_location("http://tracking:5000") is None  # the server says where
    monkeypatch.chdir(copy / "stage")  # a stage with its own wdir
    assert store_uri(default) == f"sqlite:///{repo / 'stage/mlflow.db'}"
    for outside in (repo, tmp_path):  # dvc exp run in the workspace, and no DVC copy at all
        monkeypatch.chdir(outside)
        assert store_uri(default) == mlflow.get_tracking_uri() == f"sqlite:///{outside / 'mlflow.db'}"
        assert dvc_exp.artifact_location(store_uri(default)) is None
