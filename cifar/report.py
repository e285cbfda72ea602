"""``python -m cifar.report``: a markdown table of a sweep's runs (or an experiment's), best first.

    python -m cifar.report                      # the latest sweep in experiment "cifar"
    python -m cifar.report --sweep RUN_ID       # one sweep, by its parent run id
    python -m cifar.report --all                # every training run of the experiment
    python -m cifar.report --output results.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cifar.tracking import BEST_VAL_ACC, SWEEP_DIR_TAG


class NothingToReport(Exception):
    pass


@dataclass
class Row:
    name: str
    val_acc: float | None
    test_acc: float | None
    epochs: int | None
    state: str
    seconds: float | None


def collect(client, experiment_name: str, sweep: str | None, every_run: bool) -> tuple[str, list[Row]]:
    """The report's title and rows, best validation accuracy first."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise NothingToReport(f"no MLflow experiment named {experiment_name!r} in {client.tracking_uri}")
    ids = [experiment.experiment_id]
    if every_run:
        runs = [r for r in client.search_runs(ids) if SWEEP_DIR_TAG not in r.data.tags]
        title = f"All runs of experiment {experiment_name!r}"
    else:
        parent = _sweep_parent(client, ids, sweep)
        if parent is None:
            raise NothingToReport(
                f"experiment {experiment_name!r} has no sweep yet: run one with `python -m cifar.train -m ...`, "
                "or report every run with --all"
            )
        runs = client.search_runs(ids, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        title = f"Sweep {parent.info.run_name!r} ({parent.info.run_id})"
    if not runs:
        raise NothingToReport(f"{title} has no runs")
    rows = [_row(r) for r in runs]
    rows.sort(key=lambda row: -1.0 if row.val_acc is None else row.val_acc, reverse=True)
    return title, rows


def _sweep_parent(client, experiment_ids: list[str], sweep: str | None):
    if sweep is not None:
        return client.get_run(sweep)
    parents = client.search_runs(
        experiment_ids, filter_string=f"tags.`{SWEEP_DIR_TAG}` != ''", order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return parents[0] if parents else None


def _row(run) -> Row:
    metrics, info = run.data.metrics, run.info
    return Row(
        name=info.run_name or info.run_id,
        val_acc=metrics.get(BEST_VAL_ACC),
        test_acc=metrics.get("test/acc"),
        epochs=int(metrics["epochs_run"]) if "epochs_run" in metrics else None,
        state=info.status.lower(),
        seconds=(info.end_time - info.start_time) / 1000 if info.end_time else None,
    )


def to_markdown(title: str, rows: Sequence[Row]) -> str:
    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.2%}"

    lines = [
        f"### {title}",
        "",
        "| run | best val acc | test acc | epochs | state | wall time |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        wall = "" if row.seconds is None else f"{row.seconds:.0f} s"
        epochs = "" if row.epochs is None else str(row.epochs)
        lines.append(f"| {row.name} | {pct(row.val_acc)} | {pct(row.test_acc)} | {epochs} | {row.state} | {wall} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="cifar", help="MLflow experiment (default: cifar)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--sweep", metavar="RUN_ID", help="the sweep's parent run id (default: the latest sweep)")
    scope.add_argument("--all", action="store_true", help="every training run of the experiment")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        title, rows = collect(MlflowClient(tracking_uri=args.tracking_uri), args.experiment, args.sweep, args.all)
    except NothingToReport as empty:
        print(f"cifar.report: nothing to report: {empty}", file=sys.stderr)
        return 1
    except MlflowException as err:
        print(f"cifar.report: error: {err.message.splitlines()[0]}", file=sys.stderr)
        return 2
    table = to_markdown(title, rows)
    print(table, end="")
    if args.output:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
