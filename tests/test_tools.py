"""``python -m cifar.env`` and ``python -m cifar.data`` on the fake data."""

from __future__ import annotations

import functools
import importlib.metadata
import signal
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from PIL import Image

from cifar import data_summary, env
from cifar.data import CLASSES, load_cifar10
from cifar.errors import exit_status
from cifar.parallel import cpu_cores
from tests.conftest import with_overrides


def _run(main, capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _statuses(out: str) -> dict[str, str]:
    """``{topic: status}`` from the check lines (``  ok  torch   2.14.1``: status, topic, detail in columns)."""
    return {
        line[6:27].strip(): line[:4].strip() for line in out.splitlines() if line[:4].strip() in ("ok", "warn", "FAIL")
    }


def test_env_reports_the_stack_the_device_and_a_training_step(official_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # bytecode ok with or without an installed cache
    code, out, _ = _run(env.main, capsys, "trainer.device=cpu", f"data.path={official_dir}",
                        f"data.cache_dir={tmp_path}", "data.download=false")
    statuses = _statuses(out)
    assert code == 0 and out.rstrip().endswith("READY to train on cpu (cache: see above)")
    for topic in ("Python", "torch", "torchvision", "hydra-core", "optuna", "mlflow", "dvc", "torchvision ops",
                  "bytecode", "CPU", "data", "MLflow store", "matmul", "training step"):
        assert statuses[topic] == "ok", out
    assert statuses["cache"] == "warn"  # not decoded yet into this cache dir
    assert "simplecnn, batch 8, on cpu" in out


@pytest.mark.parametrize("overrides, failed", [
    (["data.path=/no/such/dir", "data.download=false"], "data"),
    (["trainer.device=cuda:7"], "device"),
])
def test_env_says_not_ready_and_exits_1_when_something_required_is_missing(overrides, failed, official_dir, capsys):
    if failed == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, out, _ = _run(env.main, capsys, *with_overrides([f"data.path={official_dir}"], tuple(overrides)))
    assert code == 1 and _statuses(out)[failed] == "FAIL"
    assert out.rstrip().endswith(f"NOT READY: {failed} failed (see above)")


def test_env_fails_on_a_tracking_store_without_its_driver_and_shows_no_password(official_dir, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would win over mlflow.tracking_uri
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}",
                        "mlflow.tracking_uri=postgresql://cifar:s3cret@db-host/mlflow")
    assert code == 1 and out.rstrip().endswith("NOT READY: MLflow store failed (see above)")
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL  MLflow store          postgresql://cifar@db-host/mlflow: its database driver is "
                           "not installed (")
    assert line.endswith("uv sync --extra postgres, or pip install 'psycopg[binary]'")
    assert "s3cret" not in out


def test_env_checks_the_study_storage_of_an_optuna_sweep_only(official_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}")
    assert code == 0 and "Optuna storage" not in _statuses(out)  # no Optuna sweep: no study storage
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}", "hparams_search=optuna")
    assert code == 0 and f"  ok  Optuna storage        sqlite:///{tmp_path / 'optuna.db'}\n" in out
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}", "hparams_search=optuna",
                        "hydra.sweeper.storage=postgresql://cifar:s3cret@db-host/optuna")
    assert code == 1 and out.rstrip().endswith("NOT READY: Optuna storage failed (see above)")
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL  Optuna storage        postgresql://cifar@db-host/optuna: its database driver is "
                           "not installed (")
    assert "s3cret" not in out


def test_env_checks_the_runs_split_of_data_that_is_decoded(official_dir, tmp_path, capsys):
    data = [f"data.path={official_dir}", f"data.cache_dir={tmp_path}"]
    load_cifar10(official_dir, tmp_path, download=False)  # decoded: 200 training and 50 test images
    code, out, _ = _run(env.main, capsys, *data, "data.val_size=40", "data.test_limit=30")
    assert code == 0 and "  ok  split                 160 train / 40 validation / 30 test images\n" in out
    code, out, _ = _run(env.main, capsys, *data)  # the default hold-out: 5,000 images
    assert code == 1 and out.rstrip().endswith("NOT READY: split failed (see above)")
    assert ("FAIL  split                 data.val_size=5000 must be smaller than the training set (200 images): "
            "lower data.val_size\n") in out
    code, out, _ = _run(env.main, capsys, *data, "data.val_size=40", "data.limit=20", "data.batch_size=32")
    assert code == 1 and ("FAIL  split                 data.batch_size=32 is larger than the 20 training images: "
                          "lower data.batch_size or raise data.limit\n") in out


def test_env_fails_its_cpu_line_where_a_run_would_refuse_its_threads(official_dir, capsys, monkeypatch):
    cores = cpu_cores()
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}", f"trainer.threads={cores}")
    assert f" cores, {cores} torch threads, " in out and _statuses(out)["CPU"] == "ok"
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}", f"trainer.threads={cores + 1}")
    assert code == 1 and out.rstrip().endswith("NOT READY: CPU failed (see above)")
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert f": {cores} cores, {cores + 1} torch threads, " in line
    assert f"trainer.threads={cores + 1} is more than the {cores} CPU cores that this process may use (" in line
    monkeypatch.setattr(joblib, "cpu_count", lambda: 1)  # a quota of 1 CPU, as joblib reads it from the cgroup
    code, out, _ = _run(env.main, capsys, f"data.path={official_dir}")
    assert code == 0 and ": 1 core, 1 torch threads, " in out  # torch's default capped, as a run's


def test_env_fails_on_a_deleted_experiment_in_an_existing_sqlite_store_and_makes_none(official_dir, tmp_path, capsys,
                                                                                      monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would win over mlflow.tracking_uri
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = [f"data.path={official_dir}", f"mlflow.tracking_uri={uri}"]
    code, out, _ = _run(env.main, capsys, *store)
    assert code == 0 and "experiment" not in _statuses(out) and not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("kept")
    code, out, _ = _run(env.main, capsys, *store, "mlflow.experiment=kept")
    assert code == 0 and f"  ok  experiment            kept (id {experiment_id})\n" in out
    code, out, _ = _run(env.main, capsys, *store, "mlflow.experiment=fresh")
    assert code == 0 and "  ok  experiment            fresh: new, made by the first run\n" in out
    client.delete_experiment(experiment_id)
    code, out, _ = _run(env.main, capsys, *store, "mlflow.experiment=kept")
    assert code == 1 and out.rstrip().endswith("NOT READY: experiment failed (see above)")
    assert (f"FAIL  experiment            mlflow.experiment=kept was deleted from {uri}: restore it with `mlflow "
            f"experiments restore --experiment-id {experiment_id}`, or choose another mlflow.experiment\n") in out
    assert client.get_experiment_by_name("fresh") is None  # looked up, not made


def test_env_only_warns_about_data_it_will_download(tmp_path, capsys):
    code, out, _ = _run(env.main, capsys, f"data.path={tmp_path / 'empty'}", "data.download=true")
    assert code == 0 and _statuses(out)["data"] == "warn"


def test_env_and_data_report_a_bad_override_in_one_line(capsys):
    for main, prog in ((env.main, "cifar.env"), (data_summary.main, "cifar.data")):
        code, _, err = _run(main, capsys, "optimizer.lr=-1")
        assert code == 2 and err == f"{prog}: error: optimizer.lr=-1.0 is out of range: it must be > 0. " \
                                    "Fix the override or the config file.\n"
        code, _, err = _run(main, capsys, "optimizer.lr=1e-3,5e-4")  # no sweep to add -m to, as cifar.train's
        assert code == 2 and err == (f"{prog}: error: optimizer.lr=1e-3,5e-4 gives several values, where this command "
                                     "takes one: give one; one value that holds commas is quoted, as 'key=\"a,b\"', "
                                     "and a list is written key=[a,b]\n")


def test_data_summary_counts_the_splits_a_run_trains_on(official_dir, tmp_path, capsys, monkeypatch):
    grid = tmp_path / "grid.png"
    monkeypatch.setenv("HOME", str(tmp_path))  # --grid=~/...: the shell leaves the ~, cifar.data takes it as home
    code, out, _ = _run(data_summary.main, capsys, f"data.path={official_dir}", f"data.cache_dir={tmp_path / 'cache'}",
                        "data.download=false", "data.val_size=40", "data.test_limit=30", "--grid=~/grid.png")
    assert code == 0
    table = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in out.splitlines()
             if line.split() and line.split()[0] in (*CLASSES, "total")}
    assert table["total"] == [160, 40, 30]  # 200 fake train images less 40 held out; 30 of 50 test images
    assert all(train + val == 20 for train, val, _ in (table[c] for c in CLASSES))  # 20 per class in train
    assert f"cache         {tmp_path / 'cache'}" in out
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.height == 2 * len(CLASSES) * 34
        pixels = np.asarray(image)
        assert pixels.std() > 10  # images, not a blank canvas


def test_a_grid_that_cannot_be_written_is_one_line_and_exit_2(official_dir, tmp_path, capsys):
    (tmp_path / "taken.png").mkdir()  # a folder where the file would go
    data = (f"data.path={official_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.download=false",
            "data.val_size=40")
    for grid, message in ((tmp_path / "grid.jpgg", "is not a .png file: give a FILE.png"),
                          (tmp_path / "taken.png", "give a FILE.png in a writable folder")):
        code, _, err = _run(data_summary.main, capsys, *data, "--grid", str(grid))
        assert code == 2 and err.startswith("cifar.data: error: ") and err.endswith(f"{message}\n")
        assert err.count("\n") == 1 and str(grid) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "taken.png"]  # no temp file left


@pytest.mark.parametrize("module", ["cifar.env", "cifar.data"])
def test_a_reader_that_leaves_early_ends_the_tool_quietly(module, official_dir, tmp_path):
    """``python -m cifar.env | head``: no BrokenPipeError traceback, and the status of a process that SIGPIPE ended."""
    proc = subprocess.Popen([sys.executable, "-m", module, f"data.path={official_dir}", f"data.cache_dir={tmp_path}",
                             "data.download=false", "data.val_size=40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `head` does once it has read its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGPIPE
    assert "Traceback" not in err, err


def test_ctrl_c_ends_a_tool_quietly_with_the_status_of_sigint(capsys):
    def interrupted() -> int:
        print("a line before")
        raise KeyboardInterrupt

    assert exit_status(interrupted) == 128 + signal.SIGINT
    assert capsys.readouterr() == ("a line before\n", "")


def test_data_summary_runs_as_a_module(official_dir, tmp_path):
    command = [sys.executable, "-m", "cifar.data", f"data.path={official_dir}", f"data.cache_dir={tmp_path}",
               "data.download=false"]
    proc = subprocess.run([*command, "data.val_size=40"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "content hash" in proc.stdout and "airplane" in proc.stdout
    # the default hold-out (5,000 images) is more than the fake data's 200: refused, as a run would be
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.splitlines()[-1] == (
        "cifar.data: error: data.val_size=5000 must be smaller than the training set (200 images): lower data.val_size")


def test_env_warns_of_a_missing_dvc_and_fails_on_a_missing_training_package(monkeypatch):
    installed = importlib.metadata.version

    def version(missing, name):
        if name in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(importlib.metadata, "version", functools.partial(version, {"dvc"}))
    checks = {c.topic: c for c in env.package_versions()}
    assert checks["dvc"].status == "warn" and "dvc repro" in checks["dvc"].detail
    assert {c.status for topic, c in checks.items() if topic != "dvc"} == {"ok"}
    missing = {"optuna", "mlflow", "mlflow-skinny"}
    monkeypatch.setattr(importlib.metadata, "version", functools.partial(version, missing))
    checks = {c.topic: c for c in env.package_versions()}
    assert checks["optuna"].status == checks["mlflow"].status == "FAIL"


def test_env_warns_only_where_runs_would_compile_the_stack_every_time(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path))  # where Python looks for bytecode: nothing yet
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    check = env.bytecode()
    assert check.status == "warn" and "uv sync --compile-bytecode" in check.detail
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    check = env.bytecode()
    assert check.status == "ok" and "first run" in check.detail
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cached = env.torch_bytecode_path()
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.touch()
    check = env.bytecode()
    assert check.status == "ok" and "cached" in check.detail


def test_env_says_what_autocast_computes_in_on_each_kind_of_gpu(monkeypatch):
    """Before, a T4 or V100 read "bf16 yes" (torch.cuda.is_bf16_supported() counts emulated bf16) and trained in
    it; now they autocast in fp16, and a Pascal GPU, without fp16 tensor cores, in fp32."""
    capabilities = {0: (9, 0), 1: (7, 5), 2: (6, 1)}  # H100, T4, GTX 1080
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capabilities[torch.device(device).index])
    monkeypatch.setattr(torch.version, "hip", None)
    assert [env._gpu_amp(index) for index in capabilities] == [
        "native bf16", "no native bf16: amp in fp16, with loss scaling",
        "no native bf16 nor fp16 tensor cores (amp off by default)"]
