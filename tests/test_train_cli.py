"""End-to-end runs of ``python -m cifar.train`` on tiny fake data, checked through MLflow."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import pytest
import torch
from omegaconf import OmegaConf

from cifar import owner, report
from cifar.config import CONF_DIR, compose
from cifar.data import CLASSES, load_cifar10
from cifar.device import cpu_has_native_bf16
from cifar.tracking import FIXED_OVERRIDES_TAG, OWNER_TAG
from cifar.train import tag_console_lines
from tests.conftest import (
    REAL_DATA, WRITES_OVER, all_runs, assert_tags_are_the_runs_own, client_for, run_on_configured_store,
    run_without_module, sweep_parent_and_children,
)


def metric_history(cli, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client_for(cli).get_metric_history(run_id, key), key=lambda m: m.step)]


def test_single_run_logs_params_metrics_tags_and_artifacts(cli):
    proc = cli("optimizer.lr=0.002")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED"
    # where-to-run and what-to-record overrides (data.path, data.eval_batch_size, trainer.device,
    # mlflow.log_model, ...) are left out
    assert run.info.run_name == "data.batch_size=32,data.val_size=40,optimizer.lr=0.002,trainer.epochs=2"
    params = run.data.params
    assert params["optimizer.lr"] == "0.002"
    assert params["model.name"] == "simplecnn" and params["data.batch_size"] == "32"
    assert int(params["model.parameters"]) > 0 and int(params["model.flops_per_image"]) > 0
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_seconds", "train/images_per_s"):
        assert len(metric_history(cli, run.info.run_id, key)) == 2, key
    assert "train/grad_norm" not in run.data.metrics  # computed where trainer.grad_clip_norm clips, only
    metrics = run.data.metrics
    assert 0 <= metrics["test/acc"] <= 1 and math.isfinite(metrics["test/loss"])
    epochs_seconds = sum(metric_history(cli, run.info.run_id, "epoch_seconds"))
    assert 0 < metrics["train_seconds"] < epochs_seconds  # training steps only, without validation
    assert metrics["warmup_seconds"] == 0  # no compiling to warm up
    assert metrics["val/best_acc"] == max(metric_history(cli, run.info.run_id, "val/acc"))
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert len(tags["data.hash"]) == 64 and tags["device"] == "cpu" and tags["torch.version"]
    assert tags["compile"] == "false"
    # autocast and its dtype, as the default gives them on this CPU: bf16 where it has native bf16, else none
    assert (tags["amp"], tags.get("amp.dtype")) == (("true", "bfloat16") if cpu_has_native_bf16() else ("false", None))
    assert_tags_are_the_runs_own(run)
    [data_input] = run.inputs.dataset_inputs  # the runs table's Dataset column: name and digest
    dataset = data_input.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("cifar10", tags["data.hash"][:12], "local")
    assert json.loads(dataset.source) == {"uri": params["data.path"]}
    assert [(tag.key, tag.value) for tag in data_input.tags] == [("mlflow.data.context", "training")]
    found = client_for(cli).search_runs([run.info.experiment_id], f"dataset.digest = '{dataset.digest}'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    experiment = client_for(cli).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    artifacts = {a.path for a in client_for(cli).list_artifacts(run.info.run_id, "hydra")}
    assert {"hydra/config.yaml", "hydra/overrides.yaml", "hydra/hydra.yaml"} <= artifacts
    stats = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/stats.json")
    assert stats["content_hash"] == tags["data.hash"]
    assert stats["class_counts"]["train"] == {c: 20 for c in CLASSES} and len(stats["mean"]) == 3
    plots = {a.path for a in client_for(cli).list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    code = {a.path for a in client_for(cli).list_artifacts(run.info.run_id, "code")}
    assert code == ({"code/uncommitted.diff"} if tags["git.dirty"] == "true" else set())

    run_dir = cli.tmp_path / "run"
    assert (run_dir / "best.pt").exists() and (run_dir / "last.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    assert proc.stdout.count("epoch ") >= 2 or proc.stderr.count("epoch ") >= 2


@pytest.mark.slow  # 11 s
def test_ema_weights_are_the_ones_scored_and_kept_as_best(cli):
    import torch

    cli("trainer.ema_decay=0.8", "trainer.epochs=1")
    run_dir = cli.tmp_path / "run"
    best = torch.load(run_dir / "best.pt", weights_only=False)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert best["model"].keys() == last["model"].keys() == ema.keys()
    assert all(torch.equal(best["model"][k], ema[k]) for k in ema)  # best.pt holds the average
    assert not all(torch.equal(last["model"][k], ema[k]) for k in ema)  # not the last step's weights
    assert last["ema"]["n_averaged"] == 5  # one update per step


@pytest.mark.slow
def test_lookahead_syncs_every_n_steps_and_the_run_ends_on_its_slow_weights(cli):
    cli("trainer.lookahead_every=2", "trainer.epochs=1")
    run_dir = cli.tmp_path / "run"
    best = torch.load(run_dir / "best.pt", weights_only=False)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    slow = last["lookahead"]["slow"]
    assert last["lookahead"]["step"] == 5  # one per step
    assert slow.keys() == {k for k, v in last["model"].items() if v.is_floating_point()}
    # synced at step 4, trained on at step 5, then the slow weights put back: those are scored and kept
    assert all(torch.equal(last["model"][k], slow[k]) and torch.equal(best["model"][k], slow[k]) for k in slow)


@pytest.mark.slow
def test_whiten_fixes_the_first_convolution_to_whitening_filters_for_the_whole_run(cli):
    cli("trainer.whiten=true")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED" and run.data.params["trainer.whiten"] == "True"
    first_conv = torch.load(cli.tmp_path / "run/last.pt", weights_only=False)["model"]["0.weight"]
    assert torch.equal(first_conv[16:], -first_conv[:16])  # each whitening filter and its negative, untrained
    assert not torch.equal(first_conv[0], first_conv[1])


@pytest.mark.slow
def test_without_tta_in_validation_validation_scores_the_plain_images_and_the_test_the_views(cli):
    cli("trainer.tta_flip=false,true", "trainer.tta_translate=true", "trainer.tta_in_validation=false",
        "mlflow.log_plots=false", multirun=True)
    jobs = sorted((r for r in all_runs(cli) if "mlflow.parentRunId" in r.data.tags),
                  key=lambda r: r.data.params["trainer.tta_flip"])
    curves = [metric_history(cli, run.info.run_id, "val/loss") for run in jobs]
    assert len(curves[0]) == 2 and curves[0] == curves[1]  # the same training, validated on the same single view
    assert jobs[0].data.metrics["test/loss"] != jobs[1].data.metrics["test/loss"]  # tested on three views, and on six


@pytest.mark.slow  # 14 s
def test_airbench_preset_trains_norm_biases_fast_and_keeps_the_batchnorm_scales_and_whitening_fixed(cli):
    cli("experiment=airbench", "model.widths=[8,16,16]", "data.batch_size=32", "trainer.epochs=2")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED" and run.data.params["optimizer.norm_bias_lr_scale"] == "64.0"
    assert run.data.params["experiment"] == "airbench"  # the preset, which the config's keys do not name
    state = torch.load(cli.tmp_path / "run/last.pt", weights_only=False)
    weights = state["model"]
    assert torch.equal(weights["0.weight"][12:], -weights["0.weight"][:12])
    scales = [v for k, v in weights.items() if k.endswith(".weight") and v.dim() == 1]
    assert len(scales) == 6 and all(torch.equal(v, torch.ones_like(v)) for v in scales)  # under weight decay too
    assert [group["lr"] / state["optimizer"]["param_groups"][0]["lr"] for group in state["optimizer"]["param_groups"]] \
        == pytest.approx([1.0, 64.0])


def test_training_learns_the_fake_classes(cli):
    cli("trainer.epochs=8", "optimizer.lr=0.003")
    [run] = all_runs(cli)
    assert run.data.metrics["val/best_acc"] >= 0.5  # chance is 0.1


def test_multirun_nests_four_jobs_under_one_parent(cli, monkeypatch, capsys):
    proc = cli("optimizer.lr=1e-3,5e-4", "data.batch_size=16,32", "trainer.epochs=1", multirun=True)
    runs = all_runs(cli)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_name for c in children} == {  # the swept keys only
        f"data.batch_size={b},optimizer.lr={lr}" for b in (16, 32) for lr in ("0.001", "0.0005")
    }
    # named by the overrides that change the training, as typed (not data.path, trainer.device, ...); the fixed ones,
    # which the jobs' names leave out, tagged for the report to name their configurations by
    assert parent.info.run_name == ("sweep data.val_size=40 optimizer.lr=1e-3,5e-4 data.batch_size=16,32 "
                                    "trainer.epochs=1")
    assert json.loads(parent.data.tags[FIXED_OVERRIDES_TAG]) == ["data.val_size=40", "trainer.epochs=1"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/jobs"] == 4 and parent.data.metrics["sweep/jobs_finished"] == 4
    assert parent.data.metrics["val/best_acc"] == max(c.data.metrics["val/best_acc"] for c in children)
    best = max(children, key=lambda c: c.data.metrics["val/best_acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert_tags_are_the_runs_own(parent, *children)
    # each job's console lines start with its number (jobs run at once share the console); its log file's do not
    assert sorted(line.split("]")[0] for line in proc.stdout.splitlines() if " epoch 1/1 " in line) == [
        "[#0", "[#1", "[#2", "[#3"]
    assert all(re.match(r"\[\d{4}-", (cli.tmp_path / "sweep" / str(n) / "train.log").read_text()) for n in range(4))
    # the sweep's last line: its outcome, its best job, and the report of it, which works as printed
    [line] = [line for line in proc.stdout.splitlines() if "Sweep ended:" in line]
    best_acc = best.data.metrics["val/best_acc"]
    report_command = f"python -m cifar.report --sweep {parent.info.run_id}"  # read in the sweep's own experiment
    assert line.endswith(f"Sweep ended: 4 jobs (4 finished); best val/best_acc {best_acc:.4f}: "
                         f"{best.info.run_name} (MLflow run {best.info.run_id}). All of them: {report_command}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cli.tracking_uri)  # as the sweep's shell had it
    capsys.readouterr()
    assert report.main(shlex.split(report_command)[3:]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"### Sweep {parent.info.run_name!r} ({parent.info.run_id})")
    assert all(f"| {child.info.run_name} |" in table for child in children)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # by its dir, from another folder: the store its file names
    monkeypatch.chdir(cli.tmp_path / "sweep")
    assert report.main(["--sweep", "."]) == 0 and capsys.readouterr().out == table
    # and on the parent run, for the MLflow UI: the table, and the runs as CSV
    client = client_for(cli)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} == {"report/runs.md",
                                                                                     "report/runs.csv"}
    logged = Path(client.download_artifacts(parent.info.run_id, "report", str(cli.tmp_path)))
    assert (logged / "runs.md").read_text() == table
    assert report.main(["--sweep", ".", "--csv"]) == 0 and (logged / "runs.csv").read_text() == capsys.readouterr().out


@pytest.mark.parametrize("line_format,line,tagged", [
    ("[%(name)s] %(message)s", "[cifar.trainer] epoch 1/2", "[#3][cifar.trainer] epoch 1/2"),  # as Hydra's format
    ("%(message)s", "epoch 1/2", "[#3] epoch 1/2"),  # as hydra/job_logging=stdout's
])
def test_a_tagged_job_starts_its_console_lines_with_the_tag_and_leaves_its_log_file_as_formatted(
        tmp_path, line_format, line, tagged):
    formatter = logging.Formatter(line_format)
    console_text = io.StringIO()
    console, log_file = logging.StreamHandler(console_text), logging.FileHandler(tmp_path / "job.log")
    root = logging.getLogger()
    kept = root.handlers[:]
    try:
        for handler in (console, log_file):
            handler.setFormatter(formatter)
        root.handlers = [console, log_file]
        tag_console_lines("[#3]")
        logging.getLogger("cifar.trainer").warning("epoch 1/2")
    finally:
        root.handlers = kept
        log_file.close()
    assert console_text.getvalue() == f"{tagged}\n"
    assert (tmp_path / "job.log").read_text() == f"{line}\n"


@pytest.mark.slow  # 24 s: a run and a sweep of two jobs
def test_a_run_and_a_sweep_take_the_name_tags_and_description_given(cli):
    cli("mlflow.run_name=baseline", "+mlflow.tags={team:vision,goal:first try}", "trainer.epochs=1",
        "mlflow.description='The lab baseline, for comparison'")
    cli("optimizer.lr=1e-3,5e-4", "trainer.epochs=1", "mlflow.run_name=lr study", "+mlflow.tags.team=vision",
        "mlflow.description=Which lr", multirun=True)
    runs = all_runs(cli)
    [run] = [r for r in runs if r.info.run_name == "baseline"]
    assert {key: run.data.tags[key] for key in ("team", "goal", "mlflow.note.content")} == {
        "team": "vision", "goal": "first try", "mlflow.note.content": "The lab baseline, for comparison"}
    assert not [key for key in run.data.params if key.startswith(("mlflow.tags", "mlflow.run_name", "mlflow.desc"))]
    parent, children = sweep_parent_and_children([r for r in runs if r is not run])
    assert parent.info.run_name == "lr study"  # and each job is named by its own values, as without
    assert sorted(c.info.run_name for c in children) == ["optimizer.lr=0.0005", "optimizer.lr=0.001"]
    description, command = parent.data.tags["mlflow.note.content"].split("\n\n")  # and the command, as typed
    assert description == "Which lr" and command.startswith("python -m cifar.train -m data.path=")
    assert command.endswith(" 'mlflow.run_name=lr study' +mlflow.tags.team=vision 'mlflow.description=Which lr'")
    assert all(c.data.tags["mlflow.note.content"] == "Which lr" for c in children)
    tagged = client_for(cli).search_runs([run.info.experiment_id], "tags.team = 'vision'")
    assert len(tagged) == 4
    assert_tags_are_the_runs_own(*runs, given=("team", "goal"))


@pytest.mark.slow  # 11 s
def test_a_run_name_with_an_interpolation_names_each_job_of_a_sweep_with_its_values(cli):
    cli("optimizer.lr=1e-3,5e-4", "trainer.epochs=1", "mlflow.run_name=lr${optimizer.lr}-${model.name}", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert sorted(c.info.run_name for c in children) == ["lr0.0005-simplecnn", "lr0.001-simplecnn"]
    # not lr0.003, the lr before the sweep's; the command's overrides as typed, what it sweeps and what it fixes
    # (which the jobs' names leave out), but for where and how it runs (data.path, trainer.device)
    assert parent.info.run_name == "sweep data.val_size=40 data.batch_size=32 optimizer.lr=1e-3,5e-4 trainer.epochs=1"


@pytest.mark.slow  # 11 s
def test_a_sweep_over_a_tag_names_its_jobs_by_it_and_shows_it_as_a_column(cli):
    proc = cli("+mlflow.tags.phase=a,b", "trainer.epochs=1", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert sorted((c.info.run_name, c.data.tags["phase"]) for c in children) == [
        ("mlflow.tags.phase=a", "a"), ("mlflow.tags.phase=b", "b")]
    views = client_for(cli).get_experiment(parent.info.experiment_id).tags
    assert json.loads(views[f"mlflow.sharedViewState.{parent.info.run_id}"])["selectedColumns"][0] == "tags.`phase`"
    # the jobs trained one configuration, summed up as such: named by what the sweep fixed for every job (a tag
    # changes nothing trained); before, by the jobs' names alone, "defaults"
    assert " over 2 runs: data.batch_size=32,data.val_size=40,trainer.epochs=1. " in proc.stdout + proc.stderr


def test_the_sweeps_report_command_names_the_store_only_where_the_reports_default_misses_it(
        monkeypatch, tmp_path):
    from cifar.sweep_run import _report_options

    default = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's, as the report finds it: mlflow.db in its folder
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: default)
    assert _report_options(default) == []
    server = "postgresql://cifar:s3cret@db-host/mlflow"
    assert _report_options(server) == ["--tracking-uri", "postgresql://cifar@db-host/mlflow"]
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: server)  # MLFLOW_TRACKING_URI, which the report reads
    assert _report_options(server) == []


@pytest.mark.slow
def test_a_sweeps_job_without_trainer_threads_takes_torchs_default_not_the_job_befores(cli):
    from cifar.parallel import cpu_cores

    cli("trainer.threads=1,null", "trainer.epochs=1", "mlflow.log_model=false", multirun=True)
    _, children = sweep_parent_and_children(all_runs(cli))
    threads = {c.data.params["trainer.threads"]: c.data.tags["torch.threads"] for c in children}
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()  # a fresh process's
    assert threads == {"1": "1", "None": str(min(int(default), cpu_cores()))}


@pytest.mark.slow
def test_a_grid_sweep_run_again_in_its_dir_says_it_writes_over_the_earlier_ones_jobs_and_not_while_it_runs(cli):
    from cifar import owner
    from cifar.tracking import OWNER_TAG

    grid = ("seed=1,2", "trainer.epochs=1", "mlflow.log_model=false", "mlflow.log_plots=false")
    first = cli(*grid, multirun=True)
    parent, _ = sweep_parent_and_children(all_runs(cli))
    second = cli(*grid, multirun=True)
    assert "holds the sweep" not in first.stdout + first.stderr
    assert (f"hydra.sweep.dir={cli.tmp_path / 'sweep'} holds the sweep of MLflow parent run {parent.info.run_id}: "
            "this sweep's jobs write over its jobs' dirs and checkpoints") in second.stdout + second.stderr
    # the second sweep as if it still ran, in this live process: a third in its dir is refused before any run
    [running] = [r for r in all_runs(cli)
                 if "mlflow.parentRunId" not in r.data.tags and r.info.run_id != parent.info.run_id]
    client = client_for(cli)
    client.set_tag(running.info.run_id, OWNER_TAG, owner.current())
    client.update_run(running.info.run_id, status="RUNNING")
    runs = len(all_runs(cli))
    third = cli(*grid, multirun=True, check=False)
    client.set_terminated(running.info.run_id)
    assert third.returncode == 2 and third.stderr.strip() == (
        f"cifar.train: error: hydra.sweep.dir={cli.tmp_path / 'sweep'} holds a sweep that is still running (MLflow "
        f"parent run {running.info.run_id}, in process {owner.current()}): give this sweep another hydra.sweep.dir, "
        "or stop that sweep (Ctrl-C or SIGTERM) first"), third.stderr
    assert len(all_runs(cli)) == runs


@pytest.mark.slow  # 30 s
def test_a_run_in_a_dir_that_holds_an_earlier_runs_checkpoints_says_it_writes_over_them_and_not_while_it_runs(cli):
    first = cli("trainer.epochs=1")
    again = cli("trainer.epochs=1")  # the fixture's hydra.run.dir, as a command run again
    assert WRITES_OVER not in first.stdout + first.stderr
    run_dir = cli.tmp_path / "run"
    assert f"hydra.run.dir={run_dir} holds an earlier run's checkpoints: {WRITES_OVER}" in again.stdout + again.stderr
    assert len(all_runs(cli)) == 2

    # the second run, as if still running in this test's live process: a third in its dir is refused
    running = max(all_runs(cli), key=lambda run: run.info.start_time)
    client = client_for(cli)
    client.set_tag(running.info.run_id, OWNER_TAG, owner.current())
    client.update_run(running.info.run_id, status="RUNNING")
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    third = cli("trainer.epochs=2", check=False)
    client.set_terminated(running.info.run_id)
    assert third.returncode == 2 and third.stderr.strip() == (
        f"cifar.train: error: hydra.run.dir={run_dir} holds a run that is still running (MLflow run "
        f"{running.info.run_id}, in process {owner.current()}): give this run another hydra.run.dir, or stop that "
        "run (Ctrl-C or SIGTERM) first"), third.stderr
    assert len(all_runs(cli)) == 2 and (run_dir / ".hydra" / "config.yaml").read_text() == config


def test_a_sweeps_jobs_are_named_by_every_swept_key_and_a_run_by_what_changes_its_training():
    from cifar.tracking import run_name

    overrides = ["data.path=/data/x", "trainer.threads=2", "+mlflow.tags.phase=a", "optimizer.lr=1e-3"]
    assert run_name(overrides) == "optimizer.lr=1e-3"
    swept = ["trainer.threads", "mlflow.tags.phase"]
    assert run_name(overrides, swept) == "mlflow.tags.phase=a,trainer.threads=2"
    assert run_name(overrides, swept=[]) == "defaults"


def test_a_swept_run_name_names_each_job_and_a_plain_one_the_sweeps_parent():
    from cifar.task import _run_name

    cfg = compose(["mlflow.run_name=first"])
    assert _run_name(cfg, None, multirun=False, sweep=None) == "first"
    assert _run_name(cfg, None, multirun=True, sweep={"swept_keys": ["optimizer.lr", "mlflow.run_name"]}) == "first"
    plain = OmegaConf.create({"overrides": {"task": ["optimizer.lr=1e-3", "mlflow.run_name=first"]}})
    assert _run_name(cfg, plain, multirun=True, sweep={"swept_keys": ["optimizer.lr"]}) == "optimizer.lr=1e-3"


def test_run_names_round_numbers_of_many_digits_and_leave_the_rest_as_typed():
    from cifar.tracking import run_name

    overrides = ["optimizer.lr=0.0020228662931987577", "optimizer.weight_decay=4.80254240621744e-05",
                 "data.batch_size=16", "model.dropout=1e-3", "trainer.epochs=100000.0", "model=resnet18",
                 "data.path=/data/x"]
    assert run_name(overrides) == ("data.batch_size=16,model.dropout=1e-3,model=resnet18,optimizer.lr=0.002023,"
                                   "optimizer.weight_decay=4.803e-05,trainer.epochs=100000.0")


def test_val_size_0_trains_on_every_training_image_and_tests_the_last_epoch(cli):
    import json

    proc = cli("data.val_size=0")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED"
    assert "200 train / 0 val / 50 test images" in proc.stderr + proc.stdout  # the fake data's 200, none held out
    assert len(metric_history(cli, run.info.run_id, "train/loss")) == 2
    assert not {"val/acc", "val/loss", "val/best_acc"} & set(run.data.metrics)
    assert 0 <= run.data.metrics["test/acc"] <= 1 and run.data.metrics["best_epoch"] == 2
    run_dir = cli.tmp_path / "run"
    best, last = (torch.load(run_dir / name, weights_only=False) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(value, last["model"][name]) for name, value in best["model"].items())
    assert (run_dir / "epochs.csv").read_text().splitlines()[0] == "epoch,train/loss,train/acc,lr"
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final.keys() == {"best_epoch", "epochs_run", "test/loss", "test/acc"}
    plots = {a.path for a in client_for(cli).list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}


def test_grad_clip_norm_logs_each_epochs_mean_gradient_norm_before_clipping(cli):
    cli("trainer.grad_clip_norm=0.5")
    [run] = all_runs(cli)
    assert run.info.run_name == "data.batch_size=32,data.val_size=40,trainer.epochs=2,trainer.grad_clip_norm=0.5"
    norms = metric_history(cli, run.info.run_id, "train/grad_norm")
    assert len(norms) == 2 and all(0 < norm < math.inf for norm in norms)
    assert (cli.tmp_path / "run/epochs.csv").read_text().splitlines()[0] == \
        "epoch,train/loss,train/acc,train/grad_norm,val/loss,val/acc,lr"


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(cli):
    """Jobs of one sweep share a process: a repeated seed must still give the same numbers."""
    def epoch_metrics(run):
        return {key: metric_history(cli, run.info.run_id, key) for key in ("train/loss", "val/acc", "val/loss")}

    cli("seed=7,8,7", multirun=True)
    children = [r for r in all_runs(cli) if "mlflow.parentRunId" in r.data.tags]
    by_job = sorted(children, key=lambda r: r.info.start_time)
    first, other, again = (epoch_metrics(r) for r in by_job)
    assert first == again
    assert first != other
    assert by_job[0].data.metrics["test/acc"] == by_job[2].data.metrics["test/acc"]


BAD_INPUT = [
    ("optimizer.lrr=1",
     "Key 'lrr' not in 'AdamConfig'. Did you mean: 'lr'? (key: optimizer.lrr): fix or drop it; `--cfg job` lists"),
    # a key of another place, as a params.yaml has it at its top: where the line said only to fix or drop it
    ("lr=1e-3", "Key 'lr' not in 'Config' (key: lr): did you mean optimizer.lr? fix or drop it; `--cfg job` lists"),
    ("data.epochs=3", "Key 'epochs' not in 'DataConfig' (key: data.epochs): did you mean diagnostics.epochs or "
                      "trainer.epochs? fix or drop it"),
    # Hydra's keys: where the line said `--cfg job` lists them, which lists the app's
    ("hydra.run.dirr=x",
     "Did you mean: 'dir'? (key: hydra.run.dirr): fix or drop it; `--cfg hydra` lists Hydra's keys"),
    ("hydra.launcher.n_jobs=2",  # the basic launcher's: joblib's key
     "Key 'n_jobs' not in 'BasicLauncherConf' (key: hydra.launcher.n_jobs): the launcher chosen has no such key: fix "
     "it, choose a launcher that has it (hydra/launcher=joblib, ...: `--hydra-help` lists them) or drop it; "
     "`--cfg hydra` lists the keys of the launcher chosen"),
    ("hydra.sweeper.n_trials=5", "the sweeper chosen has no such key: fix it, choose a sweeper that has it "
                                 "(hparams_search=optuna or hydra/sweeper=optuna) or drop it"),
    ("data.batch_size=abc", "Value 'abc' of type 'str' could not be converted to Integer (key: data.batch_size). "
                            "Fix the override or the config file."),
    ("model=vgg", "Could not find 'model/vgg'. Available options: airbench, resnet18, resnet9, simplecnn"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0 is out of range: it must be > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range: it must be > 0"),
    ("data.path=", "data.path= is out of range: it must not be empty (an unset shell variable?): give your copy's "
                   "folder or archive, or . for this folder"),
    ("data.cache_dir=", "data.cache_dir= is out of range: it must not be empty: give a folder, or . for this folder"),
    ("trainer.epochs=0", "trainer.epochs=0 is out of range: it must be >= 1"),
    ("data.val_size=-1", "data.val_size=-1 is out of range: it must be >= 0 (0: train on every training image"),
    ("data.val_size=0 trainer.patience=2",
     "trainer.patience=2 is out of range: it needs a validation set: set data.val_size > 0, or trainer.patience=null"),
    ("data.val_size=0 diagnostics=all",
     "diagnostics.epochs=[1, 2] is out of range: it needs a validation set (the diagnostics come from its pass)"),
    # a source not decoded yet: the run decodes it, then refuses its split (refused before it decodes a decoded one)
    ("data.batch_size=500",
     "data.batch_size=500 is larger than the 160 training images: lower data.batch_size or data.val_size"),
    ("data.limit=-5", "data.limit=-5 is out of range: it must be > 0 or null (all)"),
    ("trainer.device=tpu", "trainer.device=tpu is out of range: it must be one of"),
    ("seed=-1", "seed=-1 is out of range: it must be in [0, 2**32)"),
    ("hydra.job.chdir=true",  # where the run logged to an MLflow store of its own, in its output dir
     "hydra.job.chdir=true is not supported: runs find data.path, the MLflow store and their sweep's files from the "
     "directory they start in"),
    ("model.channels=[0,64,128]", "model.channels=[0, 64, 128] is out of range: it must be 1 to 5 widths > 0"),
    ("model.hidden=0", "model.hidden=0 is out of range: it must be > 0"),
    ("optimizer.betas=[1.5,0.999]", "optimizer.betas=[1.5, 0.999] is out of range: it must be 2 values in [0, 1)"),
    ("scheduler.div_factor=0", "scheduler.div_factor=0.0 is out of range: it must be > 0"),
    ("scheduler=cosine scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio=2.0 is out of range: it must be in [0, 1]"),
    ("+extra=1", "extra is not a config key (added with +?): drop it"),
    ("+experiment=fast", "+experiment=fast: experiment is in the config's defaults already, so it takes no +: "
                         "give experiment=fast"),  # where Hydra's line said to write `override experiment: fast`
    ("+model=resnet18", "+model=resnet18: model is in the config's defaults already, so it takes no +: give "
                        "model=resnet18"),
    ("optimizer.lr=choice(1e-3", "optimizer.lr=choice(1e-3 does not parse (no viable alternative at input "
                                 "'choice(1e-3'): check its brackets and commas"),
    ("data.path=~/cifar",  # a ~ after key= that the shell left as it is: Hydra's lexer refuses it
     "data.path=~/cifar does not parse: '~' is taken only in a quoted value: for your home folder, write $HOME"),
    ("data.path=/my copy",  # unquoted in the shell: two words
     "copy is not key=value: quote an override whose value holds spaces, as 'data.path=/my data', or drop copy"),
    ("trainer.ema_decay=1.5", "trainer.ema_decay=1.5 is out of range: it must be in (0, 1) or null (off)"),
    ("trainer.lookahead_every=0", "trainer.lookahead_every=0 is out of range: it must be >= 1 or null (off)"),
    ("trainer.grad_clip_norm=0", "trainer.grad_clip_norm=0.0 is out of range: it must be > 0 or null (off)"),
    ("trainer.lookahead_decay=1", "trainer.lookahead_decay=1.0 is out of range: it must be in [0, 1)"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0 is out of range: it must be >= 1"),
    ("trainer.whiten_bias_epochs=3", "trainer.whiten_bias_epochs=3 is out of range: it needs trainer.whiten=true"),
    ("trainer.whiten=true trainer.whiten_bias_epochs=3 data.path=no-data data.download=true",  # before a download
     "trainer.whiten_bias_epochs=3 fixes the first convolution's bias, which model=simplecnn does not have"),
    ("scheduler.anneal=sqrt", "scheduler.anneal=sqrt is out of range: it must be one of ('cos', 'linear')"),
    ("data.augment.cutout=40",
     "data.augment.cutout=40 is out of range: it must be between 0 (off) and 32, the image side"),
    ("data.augment.flip=false data.augment.alternate_flip=true",
     "data.augment.alternate_flip=True is out of range: it needs data.augment.flip=true"),
    ("diagnostics=all diagnostics.epochs=[1,9]",
     "diagnostics.epochs=[1, 9] is out of range: it must list epochs between 1 and trainer.epochs"),
    ("mlflow.run_name=", "mlflow.run_name= is out of range: it must not be empty: give a name, or null"),
    ("mlflow.tags.team=vision",  # Hydra's word for a new key, which was replaced by the line for a typo
     "Key 'team' is not in struct (key: mlflow.tags.team): a tag of your own takes a +, as in +mlflow.tags.team=VALUE"),
    ("+mlflow.tags.device=gpu", "mlflow.tags.device is a tag that the runs set themselves (mlflow.*, git.*, data.*, "
                                "device, ...): give the tag another name"),  # where the run's own replaced it
    ("+mlflow.tags={a*b:x}",  # where MLflow refused it once the data was read
     "mlflow.tags.a*b is a tag name that MLflow refuses (MLflow takes 1 to 250 letters, digits, spaces and _ . - / :"),
    ("+mlflow.tags={a:{b:c}}", "mlflow.tags.a holds 'b: c', and a tag's value is one piece of text"),
    ("mlflow.log_model=false mlflow.register_model=true",
     "mlflow.register_model=True is out of range: it needs mlflow.log_model=true"),
    # where it trained, then raised MLflow's traceback
    ("mlflow.log_model=true mlflow.register_model=true mlflow.model_name=team/cnn",
     "mlflow.model_name=team/cnn is out of range: it is a name that MLflow's model registry refuses"),
    # a valid experiment name, and the default model name made of it is not
    ("mlflow.log_model=true mlflow.register_model=true mlflow.experiment=team/cifar",
     "mlflow.model_name=team/cifar-simplecnn is out of range: it is a name that MLflow's model registry refuses"),
    ("model=resnet9 model.channels=[64,128,256]",
     "model.channels=[64, 128, 256] is out of range: it must be 4 widths > 0: the prep layer's and the three stages'"),
    ("model=airbench model.widths=[64,256]",
     "model.widths=[64, 256] is out of range: it must be 3 widths > 0: one per conv group"),
    ("optimizer.norm_bias_lr_scale=0", "optimizer.norm_bias_lr_scale=0.0 is out of range: it must be > 0"),
    ("optimizer=sgd optimizer.momentum=0",
     "optimizer.nesterov=True is out of range: it needs optimizer.momentum > 0: set optimizer.nesterov=false"),
    ("optimizer=sgd optimizer.momentum=0 optimizer.nesterov=false",
     "scheduler.cycle_momentum=True is out of range: it would give SGD momentum where optimizer.momentum=0"),
    ("optimizer=muon", "scheduler.cycle_momentum=True is out of range: it would cycle Muon's momentum too "
                       "(optimizer.muon_momentum): set scheduler.cycle_momentum=false"),
    ("optimizer=muon optimizer.ns_steps=0", "optimizer.ns_steps=0 is out of range: it must be >= 1"),
    ("scheduler.base_momentum=0.97",
     "scheduler.base_momentum=0.97 is out of range: it must be in [0, scheduler.max_momentum]"),
    ("hparams_search=optuna",
     "hparams_search=optuna is a search, which runs only as a sweep: add -m (python -m cifar.train -m hparams_search"),
    ("experiment=airbench scheduler=cosine",  # the preset sets onecycle's keys
     "In 'experiment/airbench': Key 'pct_start' not in 'CosineConfig' (key: scheduler.pct_start): the scheduler "
     "chosen has no such key: choose the scheduler that experiment/airbench is written for, or fix "
     "experiment/airbench"),
]


@pytest.mark.parametrize("override,hint", [
    ("optimizer.lr=1e-3,5e-4", "; one value that holds commas is quoted, as 'key=\"a,b\"', and a list is written "
                               "key=[a,b]"),  # where Hydra's line listed three fixes, with its quotes escaped: \'
    ("optimizer.lr=range(1e-3,1e-2,1e-3)", ""),  # where it said that sweep parameters require --multirun
])
def test_values_to_sweep_over_without_m_are_refused_with_the_command_that_sweeps_them(cli, override, hint):
    proc = cli(override, "optimizer.weight_decay=0.01", check=False)
    args, _ = cli.command(override, "optimizer.weight_decay=0.01")
    sweep = shlex.join(["python", "-m", "cifar.train", "-m", *args[3:]])
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"cifar.train: error: {override} gives several values, which run only as a sweep: add -m ({sweep}){hint}")
    assert not (cli.tmp_path / "run").exists()


@pytest.mark.parametrize("override,message", BAD_INPUT, ids=[o for o, _ in BAD_INPUT])
def test_bad_input_fails_with_one_line_and_no_run(cli, override, message):
    proc = cli(*override.split(), check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cifar.train: error:") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert all_runs(cli) == []
    assert not (cli.tmp_path / "run" / "best.pt").exists()


TIME_NAMED_RUN_DIR = "hydra.run.dir=outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"  # Hydra's default


@pytest.mark.parametrize("override,refused", [
    ("trainer.epochs=0", "trainer.epochs=0 is out of range"),  # before the dir is made, as those below
    ("hparams_search=optuna", "hparams_search=optuna is a search"),
    ("trainer.resume=true", "trainer.resume=true continues the run in hydra.run.dir, here a new dir named by the time"),
    # the task's, once it decoded the data: the dir removed
    ("data.val_size=100000", "data.val_size=100000 must be smaller than the training set (200 images): lower"),
    ("data.path=nowhere data.download=false", "No CIFAR-10 data in "),
])
def test_a_run_refused_for_its_input_leaves_no_output_dir(cli, override, refused):
    proc = cli(*override.split(), TIME_NAMED_RUN_DIR, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"cifar.train: error: {refused}"), proc.stderr
    assert not (cli.tmp_path / "outputs").exists()
    assert all_runs(cli) == []


def test_a_run_that_fails_once_its_mlflow_run_began_keeps_its_output_dir(cli):
    proc = cli("optimizer=sgd", "optimizer.lr=1e12", "scheduler=none", TIME_NAMED_RUN_DIR, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("cifar.train: error: training diverged"), proc.stderr
    [run] = all_runs(cli)
    assert run.info.status == "FAILED" and Path(run.data.tags["hydra.output_dir"]).is_dir()  # its log and config


@pytest.mark.parametrize("grid,refused", [
    ("optimizer=adam,muon",  # Muon with onecycle's cycled momentum
     "the job optimizer=muon: scheduler.cycle_momentum=True is out of range"),
    ("experiment=airbench optimizer=sgd,adam",  # the preset sets SGD's keys
     "the job optimizer=adam: In 'experiment/airbench': Key 'momentum' not in 'AdamConfig' (key: optimizer.momentum)"),
    ("optimizer.lr=1e-3,1e-4 data.path=nowhere data.download=false", "No CIFAR-10 data in "),
    ("optimizer.lr=1e-3,1e-4 data.path=nowhere.npz", "data.path="),  # a decoded file: read by the jobs, not found
    ("data.val_size=50,200",  # the fake data's 200 training images: the grid's last job holds them all out
     "data.val_size=200 must be smaller than the training set (200 images): lower data.val_size"),
    ("data.limit=100,20 data.batch_size=32",
     "data.batch_size=32 is larger than the 20 training images: lower data.batch_size or raise data.limit"),
    pytest.param("trainer.device=cpu,mps", "trainer.device=mps but MPS is not available here",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    ("trainer.threads=1,4096", "trainer.threads=4096 is more than the "),
    ("seed=0,1 hydra.job.chdir=true", "hydra.job.chdir=true is not supported"),  # the jobs missed their parent run
    ("optimizer.lr=interval(1e-3,0.1)",
     "optimizer.lr=interval(1e-3,0.1): a grid sweep takes values (a,b,c), choice() or range(), not interval(): list "
     "the values, or search the interval with Optuna (hydra/sweeper=optuna, or a preset: hparams_search=optuna)"),
    ("seed=range(2,2) optimizer.lr=1e-3,2e-3",  # was a parent run ended FAILED, said to have lost its jobs, and exit 0
     "seed=range(2,2) gives no value, so the sweep would run no job: give it one value or more"),
], ids=["a value out of range", "a key the option has not", "no data", "no decoded file", "a hold-out of every image",
        "fewer images than a batch", "a device this machine has not", "more threads than cores",
        "jobs in their own dirs", "an interval", "no value"])
def test_a_grid_that_its_jobs_configs_or_data_refuse_fails_before_any_run_or_dir(cli, grid, refused):
    proc = cli(*grid.split(), multirun=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith(f"cifar.train: error: {refused}") and proc.stderr.count("\n") == 1
    assert all_runs(cli) == [] and not (cli.tmp_path / "sweep").exists()


@pytest.mark.parametrize("grid,refused", [
    ("optimizer=adam,muon", "the job optimizer=muon: scheduler.cycle_momentum=True is out of range"),
    ("trainer.threads=1,4096", "trainer.threads=4096 is more than the "),
    ("data.val_size=50,200", "data.val_size=200 must be smaller than the training set (200 images): lower "),
    ("optimizer.lr=1e-3,1e-4 data.path=nowhere data.download=false", "No CIFAR-10 data in "),
], ids=["a value out of range", "more threads than cores", "a hold-out of every decoded image", "no data"])
def test_a_grid_refused_for_its_configs_or_decoded_data_is_refused_before_it_imports_mlflow(
        cli, official_dir, grid, refused):
    """MLflow's import (2 s) waits for the checks that need no store: such a grid was refused in 3.3-3.8 s, now
    1.1-1.6 s; a split from the labels of the data's cache, as a single run's."""
    load_cifar10(official_dir, cli.tmp_path / "cache", download=False)
    proc = run_without_module(cli, "mlflow", *grid.split(), multirun=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"cifar.train: error: {refused}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and not (cli.tmp_path / "sweep").exists()


@pytest.mark.parametrize("jobs", [24, 25])
def test_a_grid_of_25_jobs_or_more_says_that_it_checks_them_first(cli, jobs):
    proc = cli(f"seed=range(0,{jobs})", "optimizer.lr=-1", multirun=True, check=False)  # refused at the first
    assert proc.returncode == 2 and proc.stderr.strip().endswith("optimizer.lr=-1.0 is out of range: it must be > 0. "
                                                                 "Fix the override or the config file.")
    said = f"Checking the configs of the sweep's {jobs} jobs before the first starts" in proc.stdout + proc.stderr
    assert said == (jobs >= 25)


OWN_PRESETS = {
    "optimizer:\n  lr: abc": "In 'experiment/mine': Value 'abc' of type 'str' could not be converted to Float (key: "
                            "optimizer.lr). Fix the override or the config file.",
    "trainr:\n  epochs: 3": "In 'experiment/mine': Key 'trainr' not in 'Config'. Did you mean: 'trainer'? (key: "
                            "trainr): fix experiment/mine",
}


@pytest.mark.parametrize("preset", OWN_PRESETS, ids=["a value of the wrong type", "an unknown key"])
def test_a_preset_of_ones_own_with_a_bad_key_or_value_is_named_in_one_line(cli, preset):
    (cli.tmp_path / "conf" / "experiment").mkdir(parents=True)
    (cli.tmp_path / "conf" / "experiment" / "mine.yaml").write_text(f"# @package _global_\n{preset}\n")
    proc = cli("--config-dir", str(cli.tmp_path / "conf"), "experiment=mine", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [f"cifar.train: error: {OWN_PRESETS[preset]}"], proc.stderr


@pytest.mark.parametrize("sweeper", ["basic", "optuna"])
def test_a_search_preset_of_ones_own_whose_params_do_not_parse_is_named_before_any_run_or_dir(cli, sweeper):
    preset = cli.tmp_path / "conf" / "hparams_search" / "mine.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_text(f"# @package _global_\ndefaults:\n  - override /hydra/sweeper: {sweeper}\n"
                      "hydra:\n  sweeper:\n    params:\n      optimizer.lr: choice(1e-3, 1e-4\n")
    proc = cli("--config-dir", str(cli.tmp_path / "conf"), "hparams_search=mine", multirun=True, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("cifar.train: error: hydra.sweeper.params: optimizer.lr=choice(1e-3, 1e-4 does not "
                               "parse (no viable alternative at input 'choice(1e-3, 1e-4'): check its brackets")
    assert all_runs(cli) == [] and not (cli.tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["output dir", "time-named output dir", "data cache", "sqlite store",
                                   "tracking server"])
def test_an_unwritable_output_or_unreachable_tracking_store_fails_in_one_line(cli, where):
    a_file = cli.tmp_path / "a-file"
    a_file.write_text("")
    overrides = {
        "output dir": [f"hydra.run.dir={a_file}/run"],
        "time-named output dir": [f"hydra.run.dir={a_file}/${{now:%Y}}"],
        "data cache": [f"data.cache_dir={a_file}/cache"],
        "sqlite store": [f"mlflow.tracking_uri=sqlite:///{a_file}/mlflow.db"],
        "tracking server": ["mlflow.tracking_uri=http://me:s3cret@127.0.0.1:9"],  # nothing listens on the discard port
    }[where]
    proc = run_on_configured_store(cli, *overrides)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    expected = {"output dir": f"cannot write {a_file}/run (Not a directory): set hydra.run.dir",
                "time-named output dir": f"cannot write {a_file}/20",
                "data cache": f"cannot write {a_file}/cache/cifar10-",
                "sqlite store": "MLflow tracking store sqlite:///",
                "tracking server": "MLflow tracking store http://me@127.0.0.1:9 cannot be used: nothing answers at "
                                   "127.0.0.1:9 (Connection refused): start its server, or correct the URL"}[where]
    assert lines[0].startswith("cifar.train: error:") and expected in lines[0], lines[0]
    assert {"output dir": "", "time-named output dir": "", "data cache": "set data.cache_dir to a writable directory",
            "tracking server": ""}.get(where, "check mlflow.tracking_uri") in lines[0]
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr
    if where == "tracking server":  # found before the data is decoded: no work for a run it cannot record
        assert not (cli.tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["grid", "optuna"])
def test_a_sweep_whose_tracking_server_does_not_answer_fails_in_one_line_and_leaves_no_sweep_dir(cli, sweep):
    search = ["optimizer.lr=0.001,0.002"] if sweep == "grid" else ["hparams_search=optuna"]
    proc = run_on_configured_store(cli, "mlflow.tracking_uri=http://127.0.0.1:9", *search, multirun=True)
    assert proc.returncode == 2
    assert proc.stderr == ("cifar.train: error: MLflow tracking store http://127.0.0.1:9 cannot be used: nothing "
                           "answers at 127.0.0.1:9 (Connection refused): start its server, or correct the URL\n")
    assert not (cli.tmp_path / "sweep").exists()


@pytest.mark.parametrize("sweep", ["grid", "optuna"])
def test_a_sweep_whose_dir_cannot_be_written_fails_in_one_line_before_any_run(cli, sweep):
    a_file = cli.tmp_path / "a-file"
    a_file.write_text("")
    search = ["optimizer.lr=0.001,0.002"] if sweep == "grid" else ["hparams_search=optuna"]
    proc = cli(f"hydra.sweep.dir={a_file}/sweep", *search, multirun=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"cifar.train: error: cannot write {a_file}/sweep (Not a directory): set hydra.run.dir "
                           "(hydra.sweep.dir with -m) to a writable directory\n")
    assert all_runs(cli) == []


def test_joblib_without_workers_fails_in_one_line_before_any_run(cli):
    proc = cli("hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "optimizer.lr=0.001,0.002", multirun=True,
               check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("cifar.train: error: hydra.launcher.n_jobs=0 is out of range: it must be >= 1 (workers), "
                           "or negative as in joblib (-1: all cores, -2: all but one, ...)\n")
    assert all_runs(cli) == [] and not (cli.tmp_path / "sweep").exists()


@pytest.mark.parametrize("multirun", [False, True])
def test_a_tracking_store_without_its_driver_fails_in_one_line_and_a_sweep_before_any_job(cli, multirun):
    """A sweep's start refuses it, where it used to be warned of while every job ran and failed."""
    uri = "postgresql://cifar:s3cret@db-host:5432/mlflow"  # named in the error without its password
    sweep = ["optimizer.lr=0.001,0.002"] if multirun else []
    proc = run_without_module(cli, "psycopg", f"mlflow.tracking_uri={uri}", *sweep, multirun=multirun)
    assert proc.returncode == 2
    assert proc.stderr == ("cifar.train: error: MLflow tracking store postgresql://cifar@db-host:5432/mlflow cannot be "
                           "used: its database driver is not installed (No module named 'psycopg'): uv sync --extra "
                           "postgres, or pip install 'psycopg[binary]'\n")
    if multirun:
        assert "Launching" not in proc.stdout and not (cli.tmp_path / "cache").exists()  # no job, no data decoded


@pytest.mark.parametrize("multirun", [pytest.param(False, marks=pytest.mark.slow), True])  # a run's: 11 s
def test_an_experiment_that_was_deleted_is_refused_in_one_line_naming_the_restore(cli, multirun):
    client = client_for(cli)
    experiment_id = client.create_experiment(cli.experiment)
    client.delete_experiment(experiment_id)
    sweep = ["optimizer.lr=0.001,0.002"] if multirun else []
    proc = cli(*sweep, multirun=multirun, check=False)
    assert proc.returncode == 2  # where it said the store could not be used: check mlflow.tracking_uri
    assert proc.stderr == (f"cifar.train: error: mlflow.experiment={cli.experiment} was deleted from "
                           f"{cli.tracking_uri}: restore it with `mlflow experiments restore --experiment-id "
                           f"{experiment_id}`, or choose another mlflow.experiment\n")
    assert client.search_runs([experiment_id]) == [] and not (cli.tmp_path / "sweep").exists()


@pytest.mark.parametrize("name,refused", [
    ("missing", "No CIFAR-10 data in {path}: put cifar-10-python.tar.gz or train/<class>/ image folders there, set "
                "data.path to your copy, or set data.download=true"),
    ("missing.tar.gz", "data.path={path} does not exist: check the path, or set data.path to a directory"),
    ("missing.npz", "data.path={path} does not exist: run `dvc repro prepare` or point data.path at the raw data"),
])
def test_missing_data_fails_with_one_line_before_hydra_writes_to_the_run_dir(cli, name, refused):
    """Refused from the file system, before the run imports torch."""
    proc = cli(data=cli.tmp_path / name, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"cifar.train: error: {refused.format(path=cli.tmp_path / name)}", proc.stderr
    assert not (cli.tmp_path / "run").exists() and all_runs(cli) == []


@pytest.mark.parametrize("override,refused", [
    ("data.val_size=200", "data.val_size=200 must be smaller than the training set (200 images): lower data.val_size"),
    ("data.batch_size=161",
     "data.batch_size=161 is larger than the 160 training images: lower data.batch_size or data.val_size"),
    ("trainer.threads=4096", "trainer.threads=4096 is more than the "),  # the CPU cores: where it trained 4x slower
])
def test_a_split_of_decoded_data_or_threads_that_a_run_cannot_use_fail_before_hydra_writes_to_the_run_dir(
        cli, official_dir, override, refused):
    """Refused in a second, before the run imports torch: the split from the labels of the data's cache. Where
    the run refused it once it had decoded the data (6 s), it left its dir with Hydra's files and a log."""
    load_cifar10(official_dir, cli.tmp_path / "cache", download=False)
    proc = cli(override, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"cifar.train: error: {refused}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (cli.tmp_path / "run").exists() and all_runs(cli) == []


def test_diverging_run_ends_failed_with_a_clear_message(cli):
    proc = cli("optimizer=sgd", "optimizer.lr=1e12", "scheduler=none", check=False)
    assert proc.returncode == 2
    assert "training diverged: train/loss is nan" in proc.stderr
    [run] = all_runs(cli)
    assert run.info.status == "FAILED"


def test_help_lists_the_groups_and_cfg_job_prints_the_config(cli):
    import subprocess
    import sys

    help_text = subprocess.run([sys.executable, "-m", "cifar.train", "--help"], capture_output=True, text=True).stdout
    groups = ("model: airbench, resnet18, resnet9, simplecnn", "optimizer: adam, adamw, muon, sgd",
              "scheduler: cosine, none, onecycle")
    for line in groups:
        assert line in help_text
    assert "schema" not in help_text
    cfg = subprocess.run(
        [sys.executable, "-m", "cifar.train", "--cfg", "job", "model=resnet18", "optimizer=sgd"],
        capture_output=True, text=True,
    ).stdout
    assert "name: resnet18" in cfg and "nesterov: true" in cfg


@pytest.mark.parametrize("flags, refusal", [
    (("-m", "--cfg", "job"), "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"),
    (("--resolve",), "The --resolve flag can only be used in conjunction with --cfg or --help"),
])
def test_flags_that_do_not_go_together_fail_in_one_line(tmp_path, flags, refusal):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cifar.train", *flags], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == (
        f"cifar.train: error: {refusal}: python -m cifar.train --help lists the flags\n")
    assert list(tmp_path.iterdir()) == []  # no output dir, no store


@pytest.mark.slow
def test_short_run_on_the_real_jpeg_copy_learns(cli, real_data_cache):
    cli(
        f"data.cache_dir={real_data_cache}", "data.limit=4096", "data.val_size=1000", "data.test_limit=2000",
        "data.batch_size=128", "data.eval_batch_size=1000", "trainer.epochs=2", "optimizer.lr=2e-3",
        data=REAL_DATA,
    )
    [run] = all_runs(cli)
    assert run.data.params["data.limit"] == "4096"
    assert run.data.metrics["test/acc"] > 0.3  # chance is 0.1; 2 epochs on 4096 images reach about 0.4


def test_a_failed_job_in_a_sweep_ends_failed_and_the_parent_is_closed(cli):
    proc = cli("optimizer=sgd", "scheduler=none", "optimizer.lr=0.01,100000.0", "trainer.epochs=1", multirun=True,
               check=False)
    assert proc.returncode == 2
    assert "training diverged" in proc.stderr
    runs = all_runs(cli)
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert statuses == {
        "optimizer.lr=0.01": "FINISHED",
        "optimizer.lr=100000.0": "FAILED",
        "sweep data.val_size=40 data.batch_size=32 optimizer=sgd scheduler=none optimizer.lr=0.01,100000.0 "
        "trainer.epochs=1": "FINISHED",
    }
    parent = next(r for r in runs if r.info.run_name.startswith("sweep"))
    assert parent.data.metrics["sweep/jobs_failed"] == 1 and parent.data.metrics["sweep/jobs_finished"] == 1
    assert "RUNNING" not in statuses.values()


def test_patience_stops_a_run_that_no_longer_improves_and_progress_can_be_forced_on(cli):
    # Without batch norm and with a learning rate of 1e-12 the predictions never change, so the
    # best val/acc is the first epoch's and the run stops `patience` epochs later.
    proc = cli("model.batch_norm=false", "optimizer.lr=1e-12", "scheduler=none", "trainer.epochs=6",
               "trainer.patience=2", "trainer.progress=true")
    [run] = all_runs(cli)
    assert run.data.metrics["epochs_run"] == 3 and run.data.metrics["best_epoch"] == 1
    assert run.data.tags["stopped_early"] == "true"
    assert_tags_are_the_runs_own(run)
    assert "Stopping early" in proc.stderr + proc.stdout
    # the live bars, which are off by default when not on a terminal: each epoch's training and validation, the test's
    assert all(f"\n{bar}:" in proc.stderr for bar in ("epoch 1/6", "epoch 3/6 val", "test")), proc.stderr


# Each of these alone stops a run before training; the fuzz test combines them with valid ones.
BAD_OVERRIDES = [
    "optimizer.lrr=1", "trainer.epoch=3", "data.batchsize=64", "model.widht=3", "+extra=1", "+trainer.foo=2",
    "data.batch_size=abc", "trainer.epochs=1.5", "optimizer.lr=fast", "trainer.tta_flip=maybe", "seed=[1,2]",
    "optimizer.lr=0", "optimizer.lr=-1e-3", "data.batch_size=-1", "trainer.epochs=0", "data.val_size=-1",
    "data.limit=-2", "data.test_limit=0", "trainer.label_smoothing=1.5", "trainer.ema_decay=0",
    "trainer.lookahead_every=0", "trainer.whiten_bias_epochs=-1", "trainer.patience=0", "trainer.threads=0",
    "model.dropout=1", "seed=-1", "model.channels=[32,64,128,256,512,1024]", "model.hidden=-1",
    "optimizer.betas=[0.9]", "scheduler.final_div_factor=0",
    "data.augment.crop_padding=-4", "data.augment.pad_mode=wrap", "data.augment.cutout=-1", "scheduler.anneal=exp",
    "trainer.device=tpu", "model=vgg", "optimizer=rmsprop", "scheduler=step", "experiment=nope",
    "data.val_size=100000", "data.path=/nonexistent/cifar", "mlflow.experiment=' '", "data.path=",
]
GOOD_OVERRIDES = ["optimizer.lr=0.01", "optimizer=sgd", "data.batch_size=16", "trainer.epochs=1", "seed=3",
                  "trainer.label_smoothing=0.1", "data.augment.flip=false"]


@pytest.mark.slow
def test_random_bad_override_combinations_fail_in_one_line_and_leave_no_run(cli):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(bad=st.lists(st.sampled_from(BAD_OVERRIDES), min_size=1, max_size=3, unique=True),
           good=st.lists(st.sampled_from(GOOD_OVERRIDES), max_size=2, unique=True),
           order=st.randoms(use_true_random=False))
    def check(bad, good, order):
        bad_keys = {o.split("=", 1)[0] for o in bad}
        overrides = bad + [o for o in good if o.split("=", 1)[0] not in bad_keys]  # a later good value would win
        order.shuffle(overrides)
        proc = cli(*overrides, "data.download=false", check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (overrides, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("cifar.train: error:"), (overrides, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
        assert all(r.info.status != "RUNNING" for r in all_runs(cli))
        assert not list(cli.tmp_path.glob("run/*.pt"))

    check()


@pytest.mark.slow
def test_resnet9_trains_and_logs_a_model_that_predicts_as_its_checkpoint(cli, official_dir):
    import numpy as np

    from cifar import inference
    from cifar.data import load_cifar10
    from cifar.registry import MODEL_NAME

    cli("model=resnet9", "model.channels=[8,16,16,32]", "mlflow.log_model=true")
    [run] = all_runs(cli)
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "resnet9"
    images = load_cifar10(official_dir, cli.tmp_path / "cache", download=False).test_images[:8]
    logged = inference.load(f"runs:/{run.info.run_id}/{MODEL_NAME}", cli.tracking_uri)
    checkpoint = inference.from_checkpoint(cli.tmp_path / "run" / "best.pt")
    x = torch.from_numpy(images)
    with torch.inference_mode():
        np.testing.assert_allclose(logged(x).numpy(), checkpoint(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_validates_and_builds_its_model(preset):
    from cifar.models import build_model

    cfg = compose([f"experiment={preset}"])
    assert isinstance(build_model(cfg.model), torch.nn.Module)


def test_the_cifar_train_command_runs_the_cli_and_completes_its_config_groups_and_keys(tmp_path):
    """``cifar-train``, installed with the project, is ``python -m cifar.train`` for Hydra's tab completion, which
    takes a command (with ``python -m``, its shell function completes nothing). It calls ``cifar.train.main`` from
    another module, where Hydra took the config's path relative to cifar/train.py for a package and found none."""
    command = str(Path(sys.executable).with_name("cifar-train"))
    shown = subprocess.run([command, "--cfg", "job", "optimizer=sgd"], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120)
    assert shown.returncode == 0 and "name: sgd" in shown.stdout, shown.stderr
    for line, completions in [("cifar-train optimizer=", "optimizer=adam optimizer=adamw optimizer=muon optimizer=sgd"),
                              ("cifar-train -m hparams_search=optuna trainer.epo", "trainer.epochs=")]:
        env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
        query = subprocess.run([command, "-sc", "query=bash"], capture_output=True, text=True, cwd=tmp_path, env=env,
                               timeout=120)
        assert query.stdout.strip() == completions, query.stderr


def test_each_groups_options_name_themselves_but_the_presets_whose_choice_is_a_param_and_a_sweeps_column():
    from cifar import tracking, ui
    from cifar.config import compose_with_hydra

    for group in sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir()):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            beside = ["scheduler=cosine"] if option == "muon" else []  # onecycle cycles momentum: refused
            cfg, hydra_cfg = compose_with_hydra([f"{group}={option}", *beside])
            if group in tracking.PRESET_GROUPS:
                assert tracking.preset_choices(hydra_cfg)[group] == option
                assert "name" not in cfg.get(group, {}), group
            else:
                assert cfg[group].name == option and group not in tracking.preset_choices(hydra_cfg)
    columns = ui.sweep_view(["experiment", "model", "optimizer.lr"])["selectedColumns"]
    assert columns[:3] == ["params.`experiment`", "params.`model.name`", "params.`optimizer.lr`"]


def test_a_sweeps_view_has_a_column_for_each_swept_param_and_tag_and_none_for_what_is_neither():
    from cifar import ui

    columns = ui.sweep_view(["seed", "data", "mlflow.tags.phase", "mlflow.run_name", "trainer.resume"])
    assert columns["selectedColumns"][:3] == ["params.`seed`", "params.`data.name`", "tags.`phase`"]
    assert columns["selectedColumns"][3:] == [f"metrics.`{m}`" for m in ui.SWEEP_METRICS]
    assert columns["columnOrder"] == [ui.RUN_NAME_COLUMN, *columns["selectedColumns"]]  # next to the names


def test_a_sweeps_view_widens_the_run_name_column_to_its_names_within_bounds():
    from cifar import ui

    def width(swept_keys, name):
        return ui.sweep_view(swept_keys, name)["columnWidths"][ui.RUN_NAME_COLUMN]

    low, high = ui.RUN_NAME_WIDTHS
    assert width(["seed"], "sweep seed=0,1") == low  # the UI's own width: no narrower
    assert low < width(["seed"], "sweep model=resnet9 seed=0,1") < width(["seed"], "sweep model=resnet9 "
                                                                                   "optimizer.lr=1e-3 seed=0,1") < high
    assert width(["seed"], "sweep " + "model=resnet9 " * 20) == high  # past it, the UI cuts the name
    searched = ["optimizer.lr", "optimizer.weight_decay"]  # an Optuna search: its jobs' names are the longer
    assert width(searched, "sweep cifar-optuna") > width([], "sweep cifar-optuna")


@pytest.mark.parametrize("key", ["data.path", "data.cache_dir"])
def test_a_path_led_by_a_tilde_is_refused_naming_what_expands_it(key):
    from cifar.errors import ConfigError

    with pytest.raises(ConfigError) as refused:  # quoted for Hydra: the shell left it as it is, and so would Python
        compose([f'{key}="~/cifar"'])
    assert str(refused.value).startswith(f"{key}=~/cifar is out of range: it must not start with ~, which nothing "
                                         "expands here: give the full path, or $HOME/... on the command line")


@pytest.mark.parametrize(("override", "message"), [
    ("data.path=a#b", "data.path=a#b does not parse: '#' is taken only in a quoted value: quote the value, as "
                      "'data.path=\"a#b\"'"),  # where the line said "(                 ^)", the caret of Hydra's
    ("data.path=a~b", "data.path=a~b does not parse: '~' is taken only in a quoted value: quote the value, as "
                      "'data.path=\"a~b\"'"),
    ("x=[a,b;c]", "x=[a,b;c] does not parse: ';' is taken only in a quoted value: quote the item that holds it, "
                  "inside the brackets"),
])
def test_a_character_that_hydra_takes_only_quoted_is_named_with_the_quoting(override, message):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from cifar.errors import unparsed_override

    with pytest.raises(OverrideParseException) as refused:
        OverridesParser.create().parse_overrides(["seed=1", override])
    assert unparsed_override(refused.value) == message


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.name=foo"], "model.name=foo is not one of the model options (simplecnn, resnet18, resnet9, airbench): "
                         "choose one with model=NAME"),  # a traceback where the model was built
    (["data.name=cifar100"], "data.name=cifar100 is not one of the data options (cifar10)"),  # trained on CIFAR-10
    (["model.name=resnet18"], "model.name=resnet18 does not match the model's other settings (resnet18 has no "
                              "channels, hidden, dropout, batch_norm): choose it with model=resnet18"),  # trained it
    (["model=resnet18", "model.name=resnet9"], "model.name=resnet9 does not match the model's other settings "
                                               "(resnet9 needs channels)"),
    (["scheduler=cosine", "scheduler.name=onecycle"], "scheduler.name=onecycle does not match the scheduler's other "
                                                      "settings (onecycle has no warmup_epochs, min_lr_ratio; "
                                                      "onecycle needs pct_start"),
    (["optimizer=muon", "scheduler=none", "optimizer.name=sgd"], "optimizer.name=sgd does not match the optimizer's "
                                                                 "other settings (sgd has no muon_lr"),
])
@pytest.mark.parametrize("typed", [True, False], ids=["composed", "params.yaml"])
def test_a_group_name_of_no_option_or_of_other_settings_is_refused(overrides, message, typed):
    from cifar.config import validate
    from cifar.errors import ConfigError

    choices = [o for o in overrides if "." not in o.split("=")[0]]
    with pytest.raises(ConfigError) as refused:
        if typed:
            compose(overrides)
        else:  # as a DVC run's params.yaml holds it: composed, then written without its schemas
            untyped = OmegaConf.create(OmegaConf.to_container(compose(choices)))
            untyped.merge_with_dotlist([o for o in overrides if o not in choices])
            validate(untyped)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(("added", "message"), [
    ("lr=0.01", "lr is not a config key (added with +?): did you mean optimizer.lr? drop it"),
    ("trainer.epoch=3", "trainer.epoch is not a config key (added with +?): drop it"),
    ("data.augment.flips=true", "data.augment.flips is not a config key"),
    ("optimizer.momentum=0.9", "optimizer.name=adam does not match the optimizer's other settings (adam has no "
                               "momentum)"),
])
def test_a_key_added_to_a_params_yaml_is_refused_as_one_added_on_the_command_line(added, message):
    """As ``dvc exp run -S +lr=0.01`` adds it, where DVC's own line says to add a key so: the untyped config of the
    DVC stage's run, whose keys no schema declares. Before, the run trained and the key was never read."""
    from cifar.config import validate
    from cifar.errors import ConfigError

    untyped = OmegaConf.create(OmegaConf.to_container(compose([])))
    untyped.merge_with_dotlist([added])
    with pytest.raises(ConfigError) as refused:
        validate(untyped)
    assert str(refused.value).startswith(message)


def test_a_group_name_of_an_option_with_the_same_settings_is_taken():
    assert compose(["optimizer.name=adamw"]).optimizer.name == "adamw"  # adam's settings are adamw's


@pytest.mark.parametrize("preset", [None, *sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))])
def test_the_smoke_run_shortens_any_preset_to_one_epoch_of_images_its_batch_fits_logged_apart(preset):
    chosen = [f"experiment={preset}"] if preset else []
    real = compose(chosen)
    cfg = compose(["debug=smoke", *chosen])
    assert cfg.trainer.epochs == 1 and cfg.mlflow.experiment == "debug" != real.mlflow.experiment
    assert cfg.data.batch_size == real.data.batch_size <= cfg.data.limit  # at least one step of the preset's batch
    assert cfg.model == real.model and cfg.optimizer == real.optimizer  # what it trains is the preset's
    assert compose(["debug=smoke", "trainer.epochs=3"]).trainer.epochs == 3  # the command line still wins


@pytest.mark.parametrize("search", ["optuna", "optuna_model"])
def test_a_smoke_search_runs_in_a_study_apart_from_the_real_search(search):
    from cifar.config import compose_with_hydra

    _, real = compose_with_hydra([f"hparams_search={search}"])
    _, smoke = compose_with_hydra(["debug=smoke", f"hparams_search={search}"])
    assert real.sweeper.study_name.startswith("cifar-optuna") and smoke.sweeper.study_name.startswith("debug-optuna")
    assert real.sweeper.storage == smoke.sweeper.storage  # the same optuna.db: the names keep them apart
