from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from cifar import report
from cifar.credentials import without_passwords
from cifar.tracking import FIXED_OVERRIDES_TAG, SWEEP_DIR_TAG, SWEEP_FILE
from tests.conftest import REFUSING_DATABASE, unreadable_database


@pytest.fixture
def store(tmp_path):
    """An MLflow store with a single run, an older sweep and a newer sweep of three jobs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")

    def run(name, status="FINISHED", parent=None, metrics=None, tags=None, start=0, seconds=10):
        tags = {**(tags or {}), **({"mlflow.parentRunId": parent} if parent else {})}
        r = client.create_run(experiment, run_name=name, tags=tags, start_time=start)
        for key, value in (metrics or {}).items():
            client.log_metric(r.info.run_id, key, value)
        client.set_terminated(r.info.run_id, status, end_time=start + seconds * 1000)
        return r.info.run_id

    run("lonely", metrics={"val/best_acc": 0.5, "test/acc": 0.49, "epochs_run": 3}, start=1000)
    old = run("sweep old", tags={SWEEP_DIR_TAG: "/tmp/old"}, start=2000)
    run("seed=0", parent=old, metrics={"val/best_acc": 0.9}, start=2001)
    new = run("sweep optimizer.lr=1e-3,5e-4", tags={SWEEP_DIR_TAG: "/tmp/new"}, start=3000, seconds=100)
    run("optimizer.lr=0.001", parent=new, metrics={"val/best_acc": 0.61, "test/acc": 0.6, "epochs_run": 5},
        start=3001, seconds=42)
    run("optimizer.lr=0.0005", parent=new, metrics={"val/best_acc": 0.72, "test/acc": 0.7, "epochs_run": 5},
        start=3002)
    run("optimizer.lr=10", parent=new, status="FAILED", metrics={"epochs_run": 1}, start=3003)
    return uri, new, old


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")][1:]


def test_latest_sweep_is_reported_best_first(store, capsys, tmp_path):
    uri, new, _ = store
    assert report.main(["--tracking-uri", uri, "--output", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert f"Sweep 'sweep optimizer.lr=1e-3,5e-4' ({new})" in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["optimizer.lr=0.0005", "optimizer.lr=0.001", "optimizer.lr=10"]
    assert rows[1] == ["optimizer.lr=0.001", "61.00%", "60.00%", "5", "finished", "42 s"]
    assert rows[2][4] == "failed" and rows[2][1] == ""
    assert (tmp_path / "r.md").read_text() == out


@pytest.mark.parametrize("status", ["RUNNING", "KILLED", "FAILED"])  # stopped or failed, and not resumed
def test_a_job_running_or_stopped_shows_its_best_validation_accuracy_and_epochs_so_far(status, store, capsys):
    uri, new, _ = store
    client = MlflowClient(tracking_uri=uri)
    job = client.create_run(client.get_experiment_by_name("cifar").experiment_id, run_name="optimizer.lr=0.002",
                            tags={"mlflow.parentRunId": new}, start_time=3004)
    for epoch, (loss, acc) in enumerate([(2.0, 0.41), (1.5, 0.66), (1.2, 0.63)], start=1):
        client.log_metric(job.info.run_id, "train/loss", loss, step=epoch)
        client.log_metric(job.info.run_id, "val/acc", acc, step=epoch)
        client.log_metric(job.info.run_id, "run_seconds", 30.0 * epoch, step=epoch)
    if status != "RUNNING":
        client.set_terminated(job.info.run_id, status, end_time=3004 + 500 * 1000)
    assert report.main(["--tracking-uri", uri]) == 0
    rows = {row[0]: row for row in table_rows(capsys.readouterr().out)}
    assert rows["optimizer.lr=0.002"] == ["optimizer.lr=0.002", "66.00%", "", "3", status.lower(), "90 s"]


def test_the_wall_time_of_a_resumed_job_leaves_out_the_time_it_was_stopped(store, capsys):
    # its MLflow run spans both processes and the night between them; each process logged run_seconds, the
    # last epoch's step holding the time over both
    uri, new, _ = store
    client = MlflowClient(tracking_uri=uri)
    resumed = client.create_run(client.get_experiment_by_name("cifar").experiment_id, run_name="optimizer.lr=0.003",
                                tags={"mlflow.parentRunId": new}, start_time=3005)
    for step, seconds in ((1, 20.0), (2, 41.0), (2, 47.0), (3, 66.0), (3, 71.0)):  # epoch 2 again after a kill
        client.log_metric(resumed.info.run_id, "run_seconds", seconds, step=step)
    client.log_metric(resumed.info.run_id, "epochs_run", 3)
    client.set_terminated(resumed.info.run_id, "FINISHED", end_time=3005 + 9 * 3600 * 1000)
    assert report.main(["--tracking-uri", uri]) == 0
    rows = {row[0]: row for row in table_rows(capsys.readouterr().out)}
    assert rows["optimizer.lr=0.003"][-1] == "71 s"
    assert rows["optimizer.lr=0.001"][-1] == "42 s"  # a run without run_seconds (older code): its MLflow run's span


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(store, capsys, tmp_path):
    uri, _, _ = store
    for folder in (str(tmp_path), f"{tmp_path / 'new'}/"):  # a folder, not a file: one there, or a new one
        assert report.main(["--tracking-uri", uri, "--output", folder]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cifar.report: error: cannot write --output {folder} (Is a directory)")
        assert err.count("\n") == 1 and not (tmp_path / "new").exists()  # not a file named as the folder
    assert report.main(["--tracking-uri", uri, "--output", str(tmp_path / "new" / "r.md")]) == 0  # folders made
    assert (tmp_path / "new" / "r.md").read_text() == capsys.readouterr().out


def test_a_chosen_sweep_and_all_runs_each_named_by_its_sweep(store, capsys):
    uri, new, old = store
    report.main(["--tracking-uri", uri, "--sweep", old])
    out = capsys.readouterr().out
    assert [r[0] for r in table_rows(out)] == ["seed=0"] and "| run | best val acc |" in out  # one sweep: no column
    report.main(["--tracking-uri", uri, "--all"])
    out = capsys.readouterr().out
    assert "| sweep | run | best val acc |" in out
    assert [r[:2] for r in table_rows(out)] == [
        ["sweep old", "seed=0"], ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.0005"],
        ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.001"], ["", "lonely"],
        ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=10"]]
    report.main(["--tracking-uri", uri, "--all", "--csv"])  # and by its parent run's id, to group by
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["run"], r["sweep_id"], r["sweep"]) for r in rows] == [
        ("seed=0", old, "sweep old"), ("optimizer.lr=0.0005", new, "sweep optimizer.lr=1e-3,5e-4"),
        ("optimizer.lr=0.001", new, "sweep optimizer.lr=1e-3,5e-4"), ("lonely", "", ""),
        ("optimizer.lr=10", new, "sweep optimizer.lr=1e-3,5e-4")]
    MlflowClient(uri).delete_run(old)  # a sweep's parent run deleted (in the UI, say): its id stands for it
    report.main(["--tracking-uri", uri, "--all"])
    assert [r[0] for r in table_rows(capsys.readouterr().out)][0] == old


def test_sweeps_given_together_are_one_table_best_first_each_read_from_its_own_store(store, capsys, tmp_path,
                                                                                    monkeypatch):
    """``--sweep A --sweep B``: both sweeps' jobs, best first, a sweep column saying whose; a sweep given by its dir
    is read from the store it records. Before, the last --sweep alone was reported."""
    uri, new, old = store
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    (tmp_path / "elsewhere").mkdir()
    client = MlflowClient(tracking_uri=elsewhere)
    experiment = client.create_experiment("debug")
    parent = client.create_run(experiment, run_name="sweep seed=1", tags={SWEEP_DIR_TAG: "/tmp/elsewhere"})
    job = client.create_run(experiment, run_name="seed=1", tags={"mlflow.parentRunId": parent.info.run_id})
    client.log_metric(job.info.run_id, "val/best_acc", 0.65)
    client.set_terminated(job.info.run_id)
    sweep_dir = tmp_path / "elsewhere" / "multirun"
    sweep_dir.mkdir()
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": parent.info.run_id, "tracking_uri": elsewhere}))
    old_dir = tmp_path / "old"  # the old sweep's dir, given besides its id
    old_dir.mkdir()
    (old_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": old, "tracking_uri": uri}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the store's mlflow.db: the default
    assert report.main(["--sweep", new, "--sweep", old, "--sweep", str(sweep_dir), "--sweep", new,
                        "--sweep", str(old_dir)]) == 0  # a sweep given twice is reported once
    out = capsys.readouterr().out
    assert out.startswith(f"### Sweep 'sweep optimizer.lr=1e-3,5e-4' ({new}); Sweep 'sweep old' ({old}); Sweep "
                          f"'sweep seed=1' ({parent.info.run_id})\n")
    assert "| sweep | run | best val acc |" in out
    assert [r[:3] for r in table_rows(out)] == [
        ["sweep old", "seed=0", "90.00%"], ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.0005", "72.00%"],
        ["sweep seed=1", "seed=1", "65.00%"], ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.001", "61.00%"],
        ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=10", ""]]
    assert report.main(["--sweep", new, "--sweep", old, "--filter", "metrics.`val/best_acc` > 0.8"]) == 0
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["seed=0"]  # none of the other sweep's: no matter
    assert report.main(["--sweep", new, "--sweep", "0" * 32]) == 2
    assert capsys.readouterr().err.startswith(f"cifar.report: error: --sweep {'0' * 32}: no such MLflow run in ")


def test_the_csv_has_a_column_for_each_tag_of_ones_own_whose_value_differs(store, capsys):
    uri, new, _ = store
    client = MlflowClient(uri)
    jobs = {r.info.run_name: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("cifar").experiment_id], f"tags.mlflow.parentRunId = '{new}'")}
    client.set_tag(jobs["optimizer.lr=0.001"], "team", "vision")  # as mlflow.tags or the MLflow UI sets them
    client.set_tag(jobs["optimizer.lr=0.0005"], "team", "speech")
    for run_id in jobs.values():
        client.set_tag(run_id, "goal", "baseline")  # the same in every row: no column, as for a param
    assert report.main(["--tracking-uri", uri, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["run"], r["tags.team"]) for r in rows] == [
        ("optimizer.lr=0.0005", "speech"), ("optimizer.lr=0.001", "vision"), ("optimizer.lr=10", "")]
    assert [key for key in rows[0] if key.startswith("tags.")] == ["tags.team"]  # none of the runs' own


def test_a_filter_reports_the_runs_it_finds_as_the_mlflow_ui_does(store, capsys, tmp_path):
    uri, new, old = store
    where = 'metrics."val/best_acc" > 0.6'
    assert report.main(["--tracking-uri", uri, "--all", "--filter", where]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"### All runs of experiment 'cifar', runs where {where}\n")
    assert [r[:2] for r in table_rows(out)] == [  # each job still named by its sweep, which the filter does not find
        ["sweep old", "seed=0"], ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.0005"],
        ["sweep optimizer.lr=1e-3,5e-4", "optimizer.lr=0.001"]]
    report.main(["--tracking-uri", uri, "--sweep", new, "--filter", "attributes.status = 'FAILED'"])
    out = capsys.readouterr().out
    assert f"({new}), runs where attributes.status = 'FAILED'" in out
    assert [r[0] for r in table_rows(out)] == ["optimizer.lr=10"]
    below = 'metrics."val/best_acc" < 0.6'
    output = ["--output", str(tmp_path / "r.md")]
    assert report.main(["--tracking-uri", uri, "--sweep", old, "--filter", below, *output]) == 1
    assert capsys.readouterr().err == (f"cifar.report: nothing to report: Sweep 'sweep old' ({old}): no run matches "
                                       f"--filter {below}\n")
    # a param by its name alone, as a params.yaml with every setting at its top has it; a key with its place is
    # none of that: a value that no run has
    unplaced = "params.lr = '0.001' and params.`data.batch_size` = '128' and params.`epochs` = '5'"
    assert report.main(["--tracking-uri", uri, "--sweep", new, "--filter", unplaced]) == 1
    assert capsys.readouterr().err == (
        f"cifar.report: nothing to report: Sweep 'sweep optimizer.lr=1e-3,5e-4' ({new}): no run matches --filter "
        f"{unplaced} (no run logs a param lr: did you mean params.optimizer.lr?; no run logs a param epochs: did you "
        "mean params.diagnostics.epochs or params.trainer.epochs?)\n")
    for bad in ("metrics.val/best_acc > 0.6", "params.model.name = resnet18"):  # unquoted: a key with /, a value
        assert report.main(["--tracking-uri", uri, "--all", "--filter", bad, *output]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cifar.report: error: --filter {bad}: ") and err.count("\n") == 1
        assert "give an MLflow search filter" in err
    assert not (tmp_path / "r.md").exists()
    nowhere = f"sqlite:///{tmp_path / 'none.db'}"  # a filter that does not parse is named first, as the fix to make
    assert report.main(["--tracking-uri", nowhere, "--filter", "metrics.val/best_acc > 0.6"]) == 2
    assert capsys.readouterr().err.startswith("cifar.report: error: --filter metrics.val/best_acc > 0.6: ")


def test_every_run_and_every_job_are_reported_beyond_a_page_of_the_stores_search(store, capsys, monkeypatch):
    uri, new, _ = store
    search_runs = MlflowClient.search_runs

    def in_pages_of_2(self, *args, max_results=1000, **kwargs):  # as MLflow's pages of 1,000 runs at most
        return search_runs(self, *args, max_results=min(max_results, 2), **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", in_pages_of_2)
    report.main(["--tracking-uri", uri, "--all"])
    assert len(table_rows(capsys.readouterr().out)) == 5  # the single run and the jobs of both sweeps
    report.main(["--tracking-uri", uri, "--sweep", new])
    assert len(table_rows(capsys.readouterr().out)) == 3


def test_runs_of_other_data_are_told_apart_by_a_data_column(store, capsys):
    uri, new, _ = store
    client = MlflowClient(uri)
    jobs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("cifar")
                                                                       .experiment_id])}
    for name in ("optimizer.lr=0.001", "optimizer.lr=0.0005", "optimizer.lr=10"):
        client.set_tag(jobs[name], "data.hash", "e00b28a47d65" + "0" * 52)
    report.main(["--tracking-uri", uri, "--sweep", new])
    assert "data" not in capsys.readouterr().out  # one data version: no column
    client.set_tag(jobs["optimizer.lr=10"], "data.hash", "85549d1b2c02" + "0" * 52)
    report.main(["--tracking-uri", uri, "--sweep", new])
    out = capsys.readouterr().out
    assert "| run | data | best val acc |" in out
    assert [r[:2] for r in table_rows(out)] == [["optimizer.lr=0.0005", "e00b28a47d65"],
                                                ["optimizer.lr=0.001", "e00b28a47d65"],
                                                ["optimizer.lr=10", "85549d1b2c02"]]
    report.main(["--tracking-uri", uri, "--all"])  # the runs of older code, with no hash: an empty cell
    assert [r[2] for r in table_rows(capsys.readouterr().out)][-2:] == ["", "85549d1b2c02"]


def test_a_configuration_trained_over_seeds_is_summed_up_by_its_mean_and_spread(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")
    fixed = {FIXED_OVERRIDES_TAG: json.dumps(["model=simplecnn", "trainer.epochs=5"])}  # what the jobs' names leave out
    parent = client.create_run(experiment, run_name="sweep", tags={SWEEP_DIR_TAG: str(tmp_path), **fixed}).info.run_id
    data = "e00b28a47d65" + "0" * 52

    def job(lr, seed, val_acc, test_acc, status="FINISHED", data_hash=data, sweep=parent, **params):
        run_id = client.create_run(experiment, run_name=f"optimizer.lr={lr},seed={seed}",
                                   tags={"mlflow.parentRunId": sweep, "data.hash": data_hash}).info.run_id
        for key, value in {"optimizer.lr": lr, "seed": seed, "mlflow.log_plots": True, **params}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "val/best_acc", val_acc)
        client.log_metric(run_id, "test/acc", test_acc)
        client.set_terminated(run_id, status)

    job(0.001, 0, 0.60, 0.59)
    job(0.001, 1, 0.62, 0.61, **{"mlflow.log_plots": False})  # a param that does not change what it trains
    job(0.001, 2, 0.64, 0.63)
    job(0.001, 3, 0.90, 0.90, data_hash="85549d1b2c02" + "0" * 52)  # other data: not pooled
    job(0.0005, 0, 0.70, 0.69)
    job(0.0005, 1, 0.72, 0.71)
    job(0.0005, 2, 0.99, 0.99, status="FAILED")  # not finished: left out
    job(0.01, 0, 0.50, 0.50)  # each of these finished once
    job(0.01, 1, 0.40, 0.40, **{"optimizer.weight_decay": 0.1})
    assert report.main(["--tracking-uri", uri, "--sweep", parent]) == 0
    table, over_seeds = capsys.readouterr().out.split("#### Over seeds")
    assert len(table_rows(table)) == 9
    assert table_rows(over_seeds) == [  # named by what the jobs' names say the sweep swept: it fixed the rest for all
        ["optimizer.lr=0.0005", "e00b28a47d65", "2", "71.00 ± 1.41", "70.00 ± 1.41", ""],
        ["optimizer.lr=0.001", "e00b28a47d65", "3", "62.00 ± 2.00", "61.00 ± 2.00",
         f"{_welch_p([0.70, 0.72], [0.60, 0.62, 0.64]):.2g}"],  # 0.011: against the first, the best
    ]
    from cifar.sweep_run import _best_job, _closing_line
    from cifar.tracking import sweep_jobs

    jobs = sweep_jobs(client, client.get_run(parent))  # the sweep's last line points at the best mean too
    best = _best_job(jobs)
    assert _closing_line(client.get_run(parent), jobs, best, ["--sweep", parent]).endswith(
        f"{best.info.run_name} (MLflow run {best.info.run_id}); best mean val/best_acc 0.7100 over 2 runs: "
        f"optimizer.lr=0.0005. All of them: python -m cifar.report --sweep {parent}")
    # with another sweep's jobs, of a sweep from before its fixed overrides were tagged: a configuration's runs may be
    # of both, and its name from its jobs' names alone (what they swept) another configuration's too; the first
    # sweep's fixed overrides name its configurations again, and a sweep column tells them apart (best run's first)
    other = client.create_run(experiment, run_name="sweep model=resnet9 optimizer.lr=1e-3,5e-4 seed=3,4,5",
                              tags={SWEEP_DIR_TAG: str(tmp_path / "other")}).info.run_id
    job(0.0005, 3, 0.74, 0.73, sweep=other)
    job(0.001, 4, 0.80, 0.80, sweep=other, **{"model.name": "resnet9"})
    job(0.001, 5, 0.82, 0.82, sweep=other, **{"model.name": "resnet9"})
    assert report.main(["--tracking-uri", uri, "--sweep", parent, "--sweep", other]) == 0
    assert [row[:4] for row in table_rows(capsys.readouterr().out.split("#### Over seeds")[1])] == [
        ["sweep model=resnet9 optimizer.lr=1e-3,5e-4 seed=3,4,5", "optimizer.lr=0.001", "e00b28a47d65", "2"],
        ["sweep model=resnet9 optimizer.lr=1e-3,5e-4 seed=3,4,5; sweep", "model=simplecnn,optimizer.lr=0.0005,"
         "trainer.epochs=5", "e00b28a47d65", "3"],
        ["sweep", "model=simplecnn,optimizer.lr=0.001,trainer.epochs=5", "e00b28a47d65", "3"],
    ]


def test_a_configuration_over_seeds_is_named_by_what_its_runs_names_say_it_trained(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")

    def run(name, val_acc, sweep=None, **params):
        tags = {"mlflow.parentRunId": sweep} if sweep else {}
        run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
        for key, value in {"optimizer.lr": 0.001, "model.name": "simplecnn", "seed": 0, **params}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "val/best_acc", val_acc)
        client.set_terminated(run_id, "FINISHED")

    def sweep(name):
        return client.create_run(experiment, run_name=name, tags={SWEEP_DIR_TAG: str(tmp_path / name)}).info.run_id

    # one configuration: a run named by its overrides, and jobs of sweeps named by their swept ones only
    run("model=simplecnn,optimizer.lr=1e-3", 0.60)  # the best run's spelling of a value names it: 0.001
    run("optimizer.lr=0.001,seed=1", 0.62, sweep("sweep optimizer.lr=1e-3,5e-4 seed=1"), seed=1)
    run("seed=2", 0.64, sweep("sweep seed=2,3"), seed=2)
    # another: the jobs of a sweep over threads and a tag, which change nothing that is trained
    run("seed=0,trainer.threads=1", 0.80, **{"optimizer.lr": 0.01})
    run("mlflow.tags.phase=b,trainer.threads=2", 0.82, **{"optimizer.lr": 0.01, "trainer.threads": 2})
    run("baseline", 0.50, **{"model.name": "resnet18"})  # and one named by mlflow.run_name
    run("defaults", 0.52, **{"model.name": "resnet18"})
    assert report.main(["--tracking-uri", uri, "--all"]) == 0
    over_seeds = capsys.readouterr().out.split("#### Over seeds")[1]
    assert [row[:3] for row in table_rows(over_seeds)] == [  # the sweeps of its runs, best first; a single run's none
        ["", "defaults", "2"],
        ["sweep seed=2,3; sweep optimizer.lr=1e-3,5e-4 seed=1", "model=simplecnn,optimizer.lr=0.001", "3"],
        ["", "baseline", "2"]]
    worst_first = [report.row(r) for r in client.search_runs([experiment], order_by=["metrics.`val/best_acc` ASC"])]
    assert "model=simplecnn,optimizer.lr=0.001" in [group.name for group in report.repeated_configs(worst_first)]


def _welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided t-test, from its formula: t on the Welch-Satterthwaite degrees of freedom."""
    from scipy.stats import t as student_t

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), dof)


def test_the_p_value_against_the_first_configuration_is_left_out_where_the_runs_do_not_say():
    def group(val_acc, data="e00b28a47d65"):
        return report.Repeated("c", data, len(val_acc), val_acc, [])

    best = group([0.70, 0.72])
    assert group([0.60, 0.62, 0.64]).p_against(best) == pytest.approx(_welch_p([0.70, 0.72], [0.60, 0.62, 0.64]))
    assert group([0.60, 0.60]).p_against(best) == pytest.approx(_welch_p([0.70, 0.72], [0.60, 0.60]))
    assert group([0.60, 0.60]).p_against(group([0.70, 0.70])) is None  # no spread in either: a test of constants
    assert group([0.60, 0.62], data="85549d1b2c02").p_against(best) is None  # other data: other validation images


def test_several_configurations_against_the_best_get_their_p_values_adjusted_by_holms_method_too():
    """Each comparison alone lets chance make a configuration look worse than the best as often as its p says; made
    together, one of them does so more often, the more there are: Holm's method makes up for it."""
    def run(lr, seed, val_acc, data="e00b28a47d65"):
        params = {"optimizer.lr": str(lr), "seed": str(seed)}
        return report.Row(run_id=f"{lr}-{seed}", name=f"optimizer.lr={lr},seed={seed}", val_acc=val_acc,
                          test_acc=None, epochs=5, state="finished", seconds=None, params=params, tags={},
                          config=report._config(params, data), data=data)

    accuracies = {0.1: [0.70, 0.72, 0.71], 0.01: [0.60, 0.62, 0.64], 0.5: [0.66, 0.71, 0.68], 1.0: [0.40, 0.40]}
    runs = [run(lr, seed, acc) for lr, scores in accuracies.items() for seed, acc in enumerate(scores)]
    other_data = [run(0.05, 0, 0.65, "85549d1b2c02"), run(0.05, 1, 0.66, "85549d1b2c02")]  # no p-value: not counted
    plain = {lr: _welch_p(accuracies[0.1], accuracies[lr]) for lr in (0.01, 0.5, 1.0)}
    three = sorted(plain, key=plain.get)  # smallest first: times 3, times 2, times 1, each at least the one before
    holm = dict(zip(three, itertools.accumulate((min(1.0, (3 - rank) * plain[lr]) for rank, lr in enumerate(three)),
                                                max)))
    assert len(set(holm.values())) == 3 and holm[three[0]] == 3 * plain[three[0]]  # no step is kept at the one before
    out = report.to_markdown(report.Report("runs", runs + other_data))
    header, *rows = [line for line in out.split("#### Over seeds")[1].splitlines() if line.startswith("| ")]
    assert header.endswith("| p against the first | p by Holm's method |")
    cells = {row[0]: row[-2:] for row in table_rows("\n".join([header, *rows]))}
    assert cells["optimizer.lr=0.1"] == ["", ""] and cells["optimizer.lr=0.05"] == ["", ""]
    assert {lr: cells[f"optimizer.lr={lr}"] for lr in plain} == {
        lr: [f"{plain[lr]:.2g}", f"{holm[lr]:.2g}"] for lr in plain}
    one = report.to_markdown(report.Report("runs", runs[:6] + other_data))  # one comparison: nothing to adjust
    assert "Holm" not in one
    assert [row[-1] for row in table_rows(one.split("#### Over seeds")[1])] == ["", "", f"{plain[0.01]:.2g}"]


def test_configurations_that_tie_on_their_mean_are_in_one_order_whatever_the_runs_order():
    """The sweep's last line names the first of them from its jobs as MLflow lists them, the report from its rows,
    best first: before, each named the one it met first."""
    def run(lr, seed, val_acc):
        params = {"optimizer.lr": str(lr), "seed": str(seed)}
        return report.Row(run_id=f"{lr}-{seed}", name=f"optimizer.lr={lr},seed={seed}", val_acc=val_acc,
                          test_acc=None, epochs=5, state="finished", seconds=None, params=params, tags={},
                          config=report._config(params, None))

    runs = [run(0.01, 0, 0.625), run(0.01, 1, 0.625), run(0.1, 0, 0.5), run(0.1, 1, 0.75),  # means 0.625
            run(0.5, 0, 0.625), run(0.5, 1, 0.625), run(1.0, 0, 0.4), run(1.0, 1, 0.4)]
    expected = ["optimizer.lr=0.1", "optimizer.lr=0.01", "optimizer.lr=0.5", "optimizer.lr=1.0"]
    for order in (runs, runs[::-1], sorted(runs, key=lambda r: -r.val_acc)):
        assert [group.name for group in report.repeated_configs(order)] == expected


def test_csv_gives_a_row_a_run_and_a_column_a_param_that_differs_between_them(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")
    parent = client.create_run(experiment, run_name="sweep", tags={SWEEP_DIR_TAG: str(tmp_path)}).info.run_id

    def job(lr, seed, metrics, status="FINISHED"):
        run_id = client.create_run(experiment, run_name=f"optimizer.lr={lr},seed={seed}",
                                   tags={"mlflow.parentRunId": parent}).info.run_id
        for key, value in {"optimizer.lr": lr, "seed": seed, "model.name": "simplecnn"}.items():
            client.log_param(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, status)
        return run_id

    low = job(0.001, 0, {"val/best_acc": 0.6125, "test/acc": 0.6, "epochs_run": 5, "run_seconds": 41.5})
    high = job(0.0005, 0, {"val/best_acc": 0.7, "test/acc": 0.69, "epochs_run": 5, "run_seconds": 40.25})
    failed = job(0.0005, 1, {"epochs_run": 1, "run_seconds": 3.0}, status="FAILED")
    assert report.main(["--tracking-uri", uri, "--csv", "--output", str(tmp_path / "r.txt")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "r.txt").read_text() == out
    rows = list(csv.DictReader(io.StringIO(out)))
    # model.name is the same in every run: no column
    assert list(rows[0]) == ["run_id", "run", "optimizer.lr", "seed", "best_val_acc", "test_acc", "epochs", "state",
                             "wall_seconds"]
    assert [list(r.values()) for r in rows] == [  # best first, the scores as fractions, unrounded
        [high, "optimizer.lr=0.0005,seed=0", "0.0005", "0", "0.7", "0.69", "5", "finished", "40.25"],
        [low, "optimizer.lr=0.001,seed=0", "0.001", "0", "0.6125", "0.6", "5", "finished", "41.5"],
        [failed, "optimizer.lr=0.0005,seed=1", "0.0005", "1", "", "", "1", "failed", "3.0"],
    ]
    assert report.main(["--tracking-uri", uri, "--output", str(tmp_path / "r.csv")]) == 0  # CSV by the file's name
    assert (tmp_path / "r.csv").read_text() == capsys.readouterr().out == out


def test_a_reader_that_leaves_early_ends_the_report_quietly(store):
    """``cifar.report | head``: no BrokenPipeError traceback, and the status of a process that SIGPIPE ended."""
    uri, _, _ = store
    proc = subprocess.Popen([sys.executable, "-m", "cifar.report", "--tracking-uri", uri, "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `head` does once it has read its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


def test_a_sweep_id_that_names_no_sweep_is_one_line_and_exit_2_naming_the_fix(store, capsys):
    uri, new, _ = store
    assert report.main(["--tracking-uri", uri, "--sweep", "0" * 32]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar.report: error: --sweep {'0' * 32}: no such MLflow run in {uri}: give a sweep's")
    assert err.count("\n") == 1
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cifar").experiment_id
    job = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{new}'")[0]
    assert report.main(["--tracking-uri", uri, "--sweep", job.info.run_id]) == 2
    assert capsys.readouterr().err == (f"cifar.report: error: --sweep {job.info.run_id}: run {job.info.run_name!r} "
                                       f"is not a sweep's parent run: give --sweep {new}, its sweep\n")


def test_a_store_that_cannot_be_read_is_one_line_and_exit_2(capsys):
    assert report.main(["--tracking-uri", "foo://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cifar.report: error: the MLflow store foo://x cannot be read (") and err.count("\n") == 1
    assert err.endswith("): check --tracking-uri / MLFLOW_TRACKING_URI\n")


@pytest.mark.parametrize("problem", ["connection refused", "no driver"])
def test_a_database_store_that_cannot_be_read_is_one_line_and_exit_2(problem, capsys, monkeypatch):
    said = unreadable_database(problem, monkeypatch)
    uri = REFUSING_DATABASE.format("mlflow")
    assert report.main(["--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar.report: error: the MLflow store {without_passwords(uri)} {said}")
    assert err.count("\n") == 1


@pytest.mark.parametrize("problem", ["connection refused", "no driver"])
def test_a_study_storage_that_cannot_be_read_is_said_in_the_report(problem, tmp_path, capsys, monkeypatch):
    said = unreadable_database(problem, monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")
    storage = REFUSING_DATABASE.format("optuna")  # tagged with its password, as by a sweep before they were left out
    parent = client.create_run(experiment, run_name="sweep search", tags={
        SWEEP_DIR_TAG: "/tmp/s", "optuna.study_name": "search", "optuna.storage": storage}).info.run_id
    job = client.create_run(experiment, run_name="job", tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_metric(job, "val/best_acc", 0.5)
    client.set_terminated(job)
    assert report.main(["--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"Optuna study `search`: its storage {without_passwords(storage)} {said}" in out
    assert [row[0] for row in table_rows(out)] == ["job"]


def test_a_sweep_is_chosen_by_its_dir_too(store, capsys, tmp_path):
    uri, _, old = store
    sweep_dir = tmp_path / "multirun" / "old"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": old, "swept_keys": ["seed"]}))
    assert report.main(["--tracking-uri", uri, "--sweep", str(sweep_dir)]) == 0
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["seed=0"]
    (tmp_path / "other").mkdir()
    assert report.main(["--tracking-uri", uri, "--sweep", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err == (f"cifar.report: error: --sweep {tmp_path / 'other'}: not a sweep's dir (it "
                                       f"has no {SWEEP_FILE}): give the dir of a `python -m cifar.train -m` sweep, or "
                                       "its parent run id\n")
    # one level too deep or too high: the sweep to give instead
    (sweep_dir / "0").mkdir()
    assert report.main(["--tracking-uri", uri, "--sweep", str(sweep_dir / "0")]) == 2
    assert capsys.readouterr().err == (f"cifar.report: error: --sweep {sweep_dir / '0'} is a job's dir of a sweep: "
                                       f"give --sweep {sweep_dir}, the sweep\n")
    newer = tmp_path / "multirun" / "2026-12-06" / "10-00-00"  # multirun/<date>/<time>, as Hydra names them
    newer.mkdir(parents=True)
    (newer / SWEEP_FILE).write_text((sweep_dir / SWEEP_FILE).read_text())
    os.utime(sweep_dir / SWEEP_FILE, (0, 0))  # written long before
    for folder in (tmp_path / "multirun", tmp_path / "multirun" / "2026-12-06"):
        assert report.main(["--tracking-uri", uri, "--sweep", str(folder)]) == 2
        count = "2 sweeps" if folder.name == "multirun" else "a sweep"
        assert capsys.readouterr().err == (f"cifar.report: error: --sweep {folder} is a folder of {count}, not a "
                                           f"sweep's dir: give one, such as the latest: --sweep {newer}\n")


def test_a_sweep_dir_is_reported_from_anywhere_from_its_own_store_and_experiment(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("debug")  # no experiment "cifar", the report's default
    sweep_dir = tmp_path / "store" / "multirun" / "sweep"
    parent = client.create_run(experiment, tags={SWEEP_DIR_TAG: str(sweep_dir)}).info.run_id
    job = client.create_run(experiment, run_name="seed=0", tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_metric(job, "val/best_acc", 0.5)
    sweep_dir.mkdir(parents=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no mlflow.db here: the sweep's file names its store
    assert report.main(["--sweep", str(sweep_dir)]) == 0
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["seed=0"]
    assert report.main(["--tracking-uri", uri, "--sweep", parent]) == 0  # by its id: its experiment, not "cifar"
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["seed=0"]
    monkeypatch.setenv("HOME", str(tmp_path / "store"))  # --sweep=~/... and --output=~/...: the shell leaves the ~
    assert report.main(["--sweep=~/multirun/sweep", "--output=~/table.md"]) == 0
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["seed=0"]
    assert [r[0] for r in table_rows((tmp_path / "store" / "table.md").read_text())] == ["seed=0"]


def test_a_sweep_records_its_store_as_a_process_in_another_folder_finds_it(tmp_path, monkeypatch):
    from cifar.tracking import portable_store

    monkeypatch.chdir(tmp_path)
    assert portable_store("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's default, here
    assert portable_store("postgresql://me:s3cret@db/mlflow") == "postgresql://me@db/mlflow"
    assert portable_store("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_nothing_to_report_is_said_clearly(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # an empty store
    assert report.main(["--tracking-uri", uri]) == 1
    assert capsys.readouterr().err.endswith(  # (after MLflow's lines as it makes the store's tables)
        f"\ncifar.report: nothing to report: no MLflow experiment named 'cifar' in {uri}\n")
    MlflowClient(tracking_uri=uri).create_experiment("debug")  # where debug=smoke runs log
    assert report.main(["--tracking-uri", uri]) == 1
    assert capsys.readouterr().err == (f"cifar.report: nothing to report: no MLflow experiment named 'cifar' in {uri}; "
                                       "it has 'debug': give --experiment debug\n")
    for name in ("a", "b", "c", "d", "e"):
        MlflowClient(tracking_uri=uri).create_experiment(name)
    assert report.main(["--tracking-uri", uri, "--all"]) == 1
    assert capsys.readouterr().err.endswith("; it has 'a', 'b', 'c', 'd', 'debug' and 1 more: give --experiment NAME\n")
    experiment_id = MlflowClient(tracking_uri=uri).create_experiment("cifar")
    assert report.main(["--tracking-uri", uri]) == 1
    assert "has no sweep yet" in capsys.readouterr().err
    MlflowClient(tracking_uri=uri).delete_experiment(experiment_id)
    assert report.main(["--tracking-uri", uri, "--all"]) == 1  # where it said that the experiment has no runs
    assert capsys.readouterr().err == (
        f"cifar.report: nothing to report: experiment 'cifar' was deleted from {uri}: restore it with `mlflow "
        f"experiments restore --experiment-id {experiment_id}`\n")


def test_a_store_that_does_not_exist_is_one_line_and_exit_2_and_is_not_created(tmp_path, capsys):
    missing = tmp_path / "elsewhere" / "mlflow.db"
    for scheme in ("sqlite", "sqlite+pysqlite"):  # the URL with SQLAlchemy's name for the driver, too
        assert report.main(["--tracking-uri", f"{scheme}:///{missing}"]) == 2
        assert capsys.readouterr().err == (f"cifar.report: error: no MLflow store at {missing}: run from the folder "
                                           "that holds it, or give --tracking-uri / MLFLOW_TRACKING_URI\n")
        assert not missing.parent.exists()
    # MLflow's default store, sqlite:///mlflow.db, in a folder that has none (a process of its own: the
    # default is MLflow's state, which the other tests set)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "cifar.report"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and f"no MLflow store at {tmp_path / 'mlflow.db'}" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_optuna_sweep_reports_trials_states_and_its_study(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    for state, value in [("COMPLETE", 0.72), ("PRUNED", None), ("FAIL", None)]:
        trial = study.ask({"optimizer.lr": lr})
        if state == "PRUNED":
            trial.report(0.3, step=1)
        study.tell(trial, value, state=optuna.trial.TrialState[state])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cifar")
    parent = client.create_run(experiment, run_name="sweep search", tags={
        SWEEP_DIR_TAG: "/tmp/s", "optuna.study_name": "search", "optuna.storage": storage,
    }).info.run_id
    for number, (status, tags, metrics) in enumerate([
        ("FINISHED", {}, {"val/best_acc": 0.72, "test/acc": 0.7, "epochs_run": 3}),
        ("FINISHED", {"pruned": "true"}, {"val/best_acc": 0.3, "epochs_run": 1}),
        ("FAILED", {}, {}),
    ]):
        run = client.create_run(experiment, run_name=f"run{number}", tags={
            "mlflow.parentRunId": parent, "optuna.trial_number": str(number), **tags,
        }).info.run_id
        for key, value in metrics.items():
            client.log_metric(run, key, value)
        client.set_terminated(run, status)
    assert report.main(["--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    best_lr = study.best_trial.params["optimizer.lr"]
    assert (f"Optuna study `search` ({storage}): 1 complete, 1 pruned, 1 fail; "
            f"best value 0.7200 (trial 0): optimizer.lr={best_lr}") in out
    rows = table_rows(out)
    assert [(r[0], r[1], r[5]) for r in rows] == [
        ("0", "run0", "finished"), ("1", "run1", "pruned"), ("2", "run2", "failed")
    ]
    assert report.main(["--tracking-uri", uri, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))  # the trials too, and no study line
    assert [(r["trial"], r["run"], r["state"]) for r in rows] == [("0", "run0", "finished"), ("1", "run1", "pruned"),
                                                                  ("2", "run2", "failed")]


def _job(run_id: str, val_acc: float | None, start_time: int):
    from types import SimpleNamespace

    metrics = {} if val_acc is None else {"val/best_acc": val_acc}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start_time),
                           data=SimpleNamespace(metrics=metrics, tags={}))


def test_of_jobs_that_tie_the_sweeps_best_is_the_first_started_and_the_report_lists_it_first():
    from cifar.sweep_run import _best_job

    jobs = [_job("third", 0.5, 3000), _job("unscored", None, 2500), _job("second", 0.5, 2000),
            _job("first", 0.5, 1000), _job("worse", 0.4, 500)]  # newest first, as MLflow's search returns them
    assert _best_job(jobs).info.run_id == "first"
    assert [j.info.run_id for j in sorted(jobs, key=lambda j: report._best_first(None, j))] == [
        "first", "second", "third", "worse", "unscored"]
    assert [j.info.run_id for j in sorted(jobs, key=lambda j: report._best_first("third", j))][:3] == [
        "third", "first", "second"]  # the parent run's pick first: in an Optuna sweep, the study's best trial
