"""Where users look, checked with the real programs: the MLflow server and its UI in headless
Chromium (Playwright), and optuna-dashboard over HTTP."""

from __future__ import annotations

import json
import math
import sys
import urllib.request
from pathlib import Path

import pytest

from cifar import ui
from tests.conftest import REPO, all_runs, load_study, sweep_parent_and_children
from tests.servers import CHROMIUM_FLAGS, chromium, free_port, serving, serving_mlflow

ARTIFACTS = REPO / "test-artifacts"  # screenshots kept after the run (git-ignored)
BIN = Path(sys.executable).parent
SWEEP = ("optimizer.lr=1e-3,2e-3", "data.augment.flip=true,false")
pytestmark = pytest.mark.slow


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture
def mlflow_server(cli):
    """A 2x2 sweep on the fake data, and `mlflow server` on a free loopback port serving its store."""
    cli(*SWEEP, "trainer.epochs=1", multirun=True)
    with serving_mlflow(cli.tracking_uri, free_port(), cli.tmp_path / "mlflow-server.log", cli.tmp_path) as url:
        yield url


def test_the_mlflow_ui_shows_a_sweep_as_a_parent_row_with_its_jobs(cli, mlflow_server, tmp_path):
    from playwright.sync_api import sync_playwright

    experiment = _get(f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name={cli.experiment}")
    tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = _get(f"{mlflow_server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
    assert len(runs) == 5
    by_id = {r["info"]["run_id"]: r for r in runs}
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert sorted(by_id) == sorted([parent.info.run_id, *(c.info.run_id for c in children)])
    view = json.loads(tags[ui.SHARED_VIEW_PREFIX + parent.info.run_id])
    assert view["selectedColumns"][:2] == ["params.`optimizer.lr`", "params.`data.augment.flip`"]
    assert parent.data.tags["mlflow.note.content"].startswith("python -m cifar.train -m ")

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 700})
            page.goto(f"{mlflow_server}/{parent.data.tags[ui.VIEW_TAG]}")
            parent_row = page.get_by_role("row").filter(has_text=parent.info.run_name[:20])
            parent_row.first.wait_for(timeout=90_000)
            # the training-runs table's heading; it can render after the rows, so it is waited for
            page.get_by_role("heading", name="Runs", exact=True).first.wait_for(timeout=30_000)
            left_and_width = page.eval_on_selector_all(  # of each column shown (the UI leaves out those out of view)
                "[role=columnheader][col-id]", "headers => Object.fromEntries(headers.map(header => "
                "[header.getAttribute('col-id'), [header.getBoundingClientRect().left, header.offsetWidth]]))")
            parent_row.first.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()  # expand
            page.get_by_text(children[0].info.run_name).first.wait_for(timeout=30_000)
            rows = "\n".join(page.get_by_role("row").all_inner_texts())
            page.screenshot(path=ARTIFACTS / "mlflow_runs_table.png")
            # the sweep's report on its parent run: the CSV shown as a table, a row a job
            page.goto(f"{mlflow_server}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts/report/"
                      "runs.csv")
            page.get_by_role("columnheader", name="best_val_acc").first.wait_for(timeout=90_000)
            report_rows = page.get_by_role("row").all_inner_texts()
            page.screenshot(path=ARTIFACTS / "mlflow_sweep_report.png")
        finally:
            browser.close()
    for child in children:
        assert child.info.run_name in rows
        assert sum(child.info.run_name in row for row in report_rows) == 1
    # the names' column as wide as the view says (the UI's own 190 px cut a sweep's name after some 20 characters),
    # and the swept params and the accuracies next to it, in the view's order, before the UI's own Duration
    left = {column: x for column, (x, _) in left_and_width.items()}
    assert left_and_width[ui.RUN_NAME_COLUMN][1] == view["columnWidths"][ui.RUN_NAME_COLUMN] == ui.RUN_NAME_WIDTHS[1]
    shown = [column for column in view["selectedColumns"] if column in left]
    assert shown[:3] == view["selectedColumns"][:3] and sorted(shown, key=left.get) == shown
    assert left[shown[-1]] < left.get("duration", math.inf)


def test_optuna_dashboard_serves_the_study_and_its_intermediate_values(cli):
    cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.epochs=2", multirun=True)
    study = load_study(cli)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "optuna-dashboard"), f"sqlite:///{cli.tmp_path / 'optuna.db'}", "--host", "127.0.0.1",
            "--port", str(port)]
    with serving(args, f"{url}/api/meta", cli.tmp_path / "dashboard.log", cwd=cli.tmp_path):
        [summary] = [s for s in _get(f"{url}/api/studies")["study_summaries"] if s["study_name"] == study.study_name]
        served = _get(f"{url}/api/studies/{summary['study_id']}")
    trials = {t["number"]: t for t in served["trials"]}
    assert sorted(trials) == [t.number for t in study.trials] == [0, 1, 2]
    for trial in study.trials:
        steps = {v["step"]: v["value"] for v in trials[trial.number]["intermediate_values"]}
        assert steps == trial.intermediate_values and steps  # val/acc per epoch, as the pruner saw it
        assert trials[trial.number]["state"] == trial.state.name.capitalize()
