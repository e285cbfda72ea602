"""Links into the MLflow UI that open where one compares training runs: the runs table.

MLflow 3.17's UI opens an experiment on its GenAI overview in a browser that was never switched
to "Model training" (a per-browser setting), its ``mlflow.experimentKind`` tag notwithstanding
(seen in headless Chromium; tests/test_ui.py). A link with ``workflowType=machine_learning``
opens the runs table. A shared view, an experiment tag ``mlflow.sharedViewState.<key>`` holding
the table's state as JSON, also picks its columns: each sweep gets one, linked from its parent run,
with the swept parameters and the accuracies as columns, next to a wider Run Name column.
"""

from __future__ import annotations

import json
from typing import Any

from cifar.credentials import without_passwords
from cifar.config import NAMED_GROUPS
from cifar.tracking import USER_TAG_KEYS, is_param

SHARED_VIEW_PREFIX = "mlflow.sharedViewState."  # the UI's experiment tags for shared table views
VIEW_TAG = "cifar.mlflow_ui"  # on a sweep's parent run: the path of its view in the UI
SWEEP_METRICS = ("val/best_acc", "test/acc", "val/acc", "train_seconds")
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the runs table's column id of the names
RUN_NAME_WIDTHS = (190, 420)  # px: the UI's own width of that column, and the widest a sweep's view makes it
NAME_PX = (65, 6.2)  # px: a parent row's name's indent and the width of a character, in the UI's font
JOB_VALUE_CHARS = 8  # a swept value in a job's name, as 0.002023 (its key is counted as it is)


def runs_table(experiment_id: str, view_key: str | None = None) -> str:
    """The UI path (after the server's address) of the experiment's runs table, in a shared view if given."""
    view = f"viewStateShareKey={view_key}&" if view_key else ""
    return f"#/experiments/{experiment_id}/runs?{view}workflowType=machine_learning"


def sweep_view(swept_keys: list[str], name: str = "") -> dict[str, Any]:
    """The runs table's state for a sweep named ``name``: its swept parameters and tags, and the accuracies, as
    columns (a swept key that is neither, as ``mlflow.run_name``, has none), moved next to the Run Name column, which
    is made as wide as the names need (:func:`run_name_width`). Before, they came after the metrics and params the
    UI shows first, past a Run Name column that cut a sweep's name after some 20 characters.

    Rows stay in the UI's default order (newest first): sorted by a metric, the table lists the
    jobs beside their parent instead of under it.
    """
    # a swept group: model -> model.name; a preset (experiment) is a param of its own, as is seed
    params = [f"{key}.name" if key in NAMED_GROUPS else key for key in swept_keys if is_param(key)]
    tags = [key.removeprefix(USER_TAG_KEYS) for key in swept_keys if key.startswith(USER_TAG_KEYS)]
    columns = ([f"params.`{p}`" for p in params] + [f"tags.`{t}`" for t in tags]
               + [f"metrics.`{m}`" for m in SWEEP_METRICS])
    return {
        "searchFilter": "",
        "selectedColumns": columns,
        "columnOrder": [RUN_NAME_COLUMN, *columns],  # the UI sizes only the columns that it lists
        "columnWidths": {RUN_NAME_COLUMN: run_name_width(name, swept_keys)},
    }


def run_name_width(name: str, swept_keys: list[str]) -> int:
    """The Run Name column's width (px) that shows the sweep's ``name`` and its jobs' names (``key=value`` of each
    swept key, the values guessed) whole, within :data:`RUN_NAME_WIDTHS`."""
    job_name = sum(len(key) + 1 + JOB_VALUE_CHARS for key in swept_keys) + len(swept_keys) - 1
    indent, per_char = NAME_PX
    low, high = RUN_NAME_WIDTHS
    return int(min(high, max(low, indent + per_char * max(len(name), job_name))))


def share_sweep_view(client: Any, experiment_id: str, parent_run_id: str, swept_keys: list[str]) -> str:
    """Store the sweep's table view in the experiment and link it from the parent run; return its UI path."""
    view = sweep_view(swept_keys, client.get_run(parent_run_id).info.run_name)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + parent_run_id, json.dumps(view))
    path = runs_table(experiment_id, parent_run_id)
    client.set_tag(parent_run_id, VIEW_TAG, path)
    return path


def address(tracking_uri: str, path: str) -> str:
    """The full link: on the tracking server, or on ``mlflow ui`` for a local store."""
    server = tracking_uri.startswith(("http://", "https://"))
    base = without_passwords(tracking_uri).rstrip("/") if server else LOCAL_UI
    return f"{base}/{path}"
