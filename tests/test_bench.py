"""Each benchmark runs to its table on a few images (no timing is checked: bench/ measures, tests do not). A bench
script is run by hand, rarely, and a change elsewhere broke one unseen: checkpoint_cost.py took the checkpoints'
names from cifar.checkpoint after they had moved to cifar.files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, train_command

SMALL = {  # script: its arguments for a short run, and what its result holds
    "augment_cost.py": (["--images", "256", "--repeats", "1"], "| ... with alternating flips |"),
    "checkpoint_cost.py": (["--models", "simplecnn", "--epochs", "1", "--epoch-ops", "100"],
                           "| simplecnn | in the background |"),
    "collector_cost.py": (["--repeats", "1"], "| evaluate | "),
    "config_checks.py": (["--repeats", "1"], "| check the search space |"),
    "eval_batch.py": (["--images", "256", "--resnet-images", "64", "--repeats", "1"], "| resnet18 |"),
    "layer_order.py": (["--rounds", "2", "--steps", "1", "--batch", "16"], "labs' step / this project's step: "),
    "logging_cost.py": (["--repeats", "1"], "| resnet18 |"),
    "muon_step.py": (["--images", "128", "--batch", "64", "--rounds", "1"], "| muon | airbench | muon | 64 |"),
    "pooling.py": (["--rounds", "1", "--batch", "16"], "| float32 | contiguous |"),
    "profile_step.py": (["--model", "simplecnn", "--steps", "1", "--batch", "16"], "| aten::"),
    "step_cost.py": (["--images", "256", "--rounds", "1"], " images/s  1.00x"),
    "threads.py": (["--steps", "1", "--repeats", "1", "--threads", "1", "2", "--batch", "16"], "\n| 2 | "),
}


def run_bench(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(out: str) -> list[str]:
    """The rows of the markdown tables in ``out``, their headings and rules left out."""
    return [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|--")][1:]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_a_benchmark_runs_to_its_result(script):
    args, result = SMALL[script]
    assert result in run_bench(script, *args)


@pytest.mark.slow
def test_the_throughput_benchmark_runs_to_its_table(official_dir, tmp_path):
    out = run_bench("throughput.py", "--data", str(official_dir), "--cache-dir", str(tmp_path), "--images", "128",
                    "--amp-images", "64", "--warmup-images", "32", "--repeats", "1")
    assert "| classic (PIL + DataLoader, fp32) |" in out and len(table_rows(out)) >= 5, out


@pytest.mark.slow
def test_the_benchmarks_of_a_trained_model_run_to_their_tables(official_dir, tmp_path):
    subprocess.run(train_command(official_dir, tmp_path, "trainer.epochs=1"), cwd=tmp_path, check=True,
                   capture_output=True, timeout=600,
                   env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    [cache] = (tmp_path / "cache").glob("*.npz")
    trained = ["--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(cache), "--repeats", "1"]
    out = run_bench("tta.py", *trained)
    assert "| true | true |" in out and len(table_rows(out)) == 3, out
    out = run_bench("predict_speed.py", *trained, "--images", "64")
    assert "| python -m cifar.predict (once, start-up included) |" in out and len(table_rows(out)) == 3, out


@pytest.mark.slow
def test_the_benchmarks_that_train_runs_leave_no_files_beside_them(official_dir, tmp_path):
    """time_to_accuracy.py and checkpoint_ab.py train in the repository, into a store of their own, which keeps its
    runs' files in its temp dir: MLflow's default put them in the repository's mlruns, and left them there."""
    mlruns = REPO / "mlruns"
    before = set(mlruns.rglob("*")) if mlruns.exists() else set()
    data = [f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=40", "data.batch_size=32", "data.test_limit=50"]
    out = run_bench("time_to_accuracy.py", "--seeds", "2", "--data", str(official_dir), "trainer.epochs=1", *data)
    assert "| mean ± std |" in out and ": 2 seeds, 1 epoch, model simplecnn, batch 32" in out, out
    out = run_bench("checkpoint_ab.py", "--rounds", "1", "--every", "2", f"data.path={official_dir}",
                    "trainer.epochs=3", *data)
    assert len(table_rows(out)) == 3 and "1 run each way" in out, out
    assert (set(mlruns.rglob("*")) if mlruns.exists() else set()) == before
