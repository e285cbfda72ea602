"""``python -m cifar.report``: a markdown table of a sweep's runs (or an experiment's), best first.

For an Optuna sweep, the table says each run's trial and state (finished, pruned, failed), and a
line above it sums up the study from its storage: trials by state, best value and parameters.
Where a configuration finished more than once (``-m ... seed=0,1,2``), a second table gives its mean
and standard deviation over those runs, and each one's p-value against the best (Welch's t-test; adjusted
by Holm's method too, for two comparisons or more).

    python -m cifar.report                      # the latest sweep in experiment "cifar"
    python -m cifar.report --sweep RUN_ID       # one sweep, by its parent run id
    python -m cifar.report --sweep multirun/2026-12-02/10-00-00   # or by its dir
    python -m cifar.report --sweep RUN_ID --sweep multirun/2026-12-03/09-00-00   # two sweeps in one table
    python -m cifar.report --all                # every training run of the experiment
    python -m cifar.report --output results.md
    python -m cifar.report --csv                # a row a run, a column a param that differs: for a spreadsheet
    python -m cifar.report --all --filter 'params.model.name = "resnet18" and metrics."test/acc" > 0.9'
"""

from __future__ import annotations

import argparse
import csv
import errno
import functools
import io
import json
import os
import re
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from cifar.credentials import without_passwords
from cifar.errors import UserError, exit_with_status_of, first_line, os_reason
from cifar.files import atomic_write_text
from cifar.significance import holm
from cifar.stores import unusable
from cifar.sweeper import SQLITE
from cifar.tracking import (
    BEST_RUN_TAG, BEST_VAL_ACC, DATA_HASH_TAG, DATASET_DIGEST_CHARS, DEFAULTS_NAME, FIXED_OVERRIDES_TAG,
    MODEL_SIZE_PARAMS, PRESET_GROUPS, PRUNED_TAG, RUN_SECONDS, STUDY_NAME_TAG, STUDY_STORAGE_TAG, SWEEP_DIR_TAG,
    SWEEP_FILE, TRIAL_NUMBER_TAG, chosen_store, existing_run, existing_store, is_own_tag, names_the_training,
    override_key, read_sweep, search_all_runs, store_errors, sweep_jobs, sweep_near, unreadable_store,
)


DEFAULT_EXPERIMENT = "cifar"  # the config's mlflow.experiment (conf/config.yaml)


class NothingToReport(Exception):
    pass


@dataclass
class Row:
    run_id: str
    name: str
    val_acc: float | None
    test_acc: float | None
    epochs: int | None
    state: str
    seconds: float | None
    params: dict[str, str]  # as logged: the resolved config, flattened
    tags: dict[str, str]  # the tags of one's own (mlflow.tags, or set in the MLflow UI)
    sweep_id: str | None = None  # the parent run of the sweep it is a job of
    sweep: str | None = None  # that run's name (its id where the run is not in the experiment)
    trial: int | None = None
    data: str | None = None  # the digest of the data it trained on
    config: tuple | None = None  # what it trained but its seed (:func:`_config`); None for a run that logged no seed
    fixed: tuple[str, ...] = ()  # the overrides that its sweep gave every job, which its name leaves out


@dataclass
class Repeated:
    """A configuration's finished runs (of several seeds, or repeats), summed up."""
    name: str
    data: str | None
    runs: int
    val_acc: list[float]
    test_acc: list[float]
    sweeps: tuple[str, ...] = ()  # the names of the sweeps its runs are jobs of, each once, its best run's first

    @property
    def mean_val_acc(self) -> float:
        return statistics.fmean(self.val_acc)

    def p_against(self, other: Repeated) -> float | None:
        """Welch's t-test of the two configurations' best validation accuracies (two-sided): the chance of means at
        least this far apart between configurations as good as each other. None where the runs do not say: of other
        data, or with no spread in either configuration (a test of two constants)."""
        if self.data != other.data or statistics.pvariance(self.val_acc) == statistics.pvariance(other.val_acc) == 0:
            return None
        from scipy.stats import ttest_ind

        with warnings.catch_warnings():  # scipy's, of a configuration whose runs scored alike: its spread is none
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(ttest_ind(self.val_acc, other.val_acc, equal_var=False).pvalue)


@dataclass
class Report:
    title: str
    rows: list[Row]
    study: str | None = None  # the Optuna study's summary line, for an Optuna sweep

    @property
    def has_trials(self) -> bool:
        """Its runs are trials of an Optuna study: a column gives each one's number."""
        return any(row.trial is not None for row in self.rows)

    @property
    def has_several_data(self) -> bool:
        """Its runs trained on more than one version of the data: a column gives each one's digest, so that runs of
        other data stand out."""
        return len({row.data for row in self.rows}) > 1

    @property
    def has_several_sweeps(self) -> bool:
        """Its runs (every run of an experiment) are jobs of more than one sweep, or some are single runs: a
        column gives each one's sweep."""
        return of_several_sweeps(self.rows)


def of_several_sweeps(rows: list[Row]) -> bool:
    """Whether ``rows`` are jobs of more than one sweep, or some are single runs."""
    return len({row.sweep_id for row in rows}) > 1


def repeated_configs(rows: list[Row]) -> list[Repeated]:
    """The configurations that finished more than once (of other seeds, or repeats), best mean validation accuracy
    first; of those that tie, the one with the best run, then by name: the same order for rows in any order (the
    report's, best first, and the sweep's last line's, as MLflow lists its jobs)."""
    groups: dict[tuple, list[Row]] = {}
    for finished in rows:
        if finished.state == "finished" and finished.config is not None and finished.val_acc is not None:
            groups.setdefault(finished.config, []).append(finished)
    of_one_sweep = not of_several_sweeps(rows)
    repeated = [_summed_up(group, of_one_sweep) for group in groups.values() if len(group) > 1]
    return sorted(repeated, key=lambda group: (-group.mean_val_acc, -max(group.val_acc), group.name))


def _summed_up(runs: list[Row], of_one_sweep: bool) -> Repeated:
    """The finished ``runs`` of one configuration as a :class:`Repeated`, named (and its sweeps listed) best run
    first. Where all the runs are jobs of one sweep, what it fixed for every job tells no two apart: a configuration
    is then named by what the sweep swept, where that names it (not in ``-m model=resnet9 seed=0,1,2``, whose jobs'
    names give only their seeds)."""
    best_first = sorted(runs, key=lambda r: -r.val_acc)
    names = [r.name for r in best_first]
    swept = _configuration_name(names)
    name = swept if of_one_sweep and swept != DEFAULTS_NAME else _configuration_name(
        names, [o for r in best_first for o in r.fixed])
    return Repeated(name, runs[0].data, len(runs),
                    [r.val_acc for r in runs], [r.test_acc for r in runs if r.test_acc is not None],
                    tuple(dict.fromkeys(r.sweep for r in best_first if r.sweep)))  # a single run's: none


def collect(client, experiment_name: str, every_run: bool, where: str = "") -> Report:
    """The report of experiment ``experiment_name``'s latest sweep, or of all its runs: its title, study summary and
    rows, best validation accuracy first, of the runs that the MLflow search filter ``where`` finds, if given. The
    sweeps that ``--sweep`` chooses are read in their own experiments (:func:`sweep_report`, :func:`of_sweeps`)."""
    if every_run:
        ids = [_experiment_id(client, experiment_name)]
        sweeps = {r.info.run_id: r for r in search_all_runs(client, ids, SWEEPS)}
        runs = [r for r in search_all_runs(client, ids, where) if r.info.run_id not in sweeps]
        report = Report(f"All runs of experiment {experiment_name!r}",
                        [row(r, client, sweeps) for r in sorted(runs, key=functools.partial(_best_first, None))])
    else:
        report = sweep_report(client, _latest_sweep(client, experiment_name), where)
    return checked(report, where)


def sweep_report(client, parent, where: str = "") -> Report:
    """The report of the sweep whose parent run is ``parent``, of its jobs that ``where`` finds (all, for "")."""
    return of_sweep(client, parent, sweep_jobs(client, parent, where), parent.data.tags.get(BEST_RUN_TAG),
                    _study_line(parent.data.tags))


def checked(report: Report, where: str) -> Report:
    """``report``, its title saying ``where``, the filter; NothingToReport where it has no rows."""
    if not report.rows:
        raise NothingToReport(f"{report.title}: no run matches --filter {where}{_params_elsewhere(where)}" if where
                              else f"{report.title} has no runs")
    if where:
        report.title += f", runs where {where}"
    return report


_FILTERED_PARAM = re.compile(r"""params\.(?:`([^`]+)`|"([^"]+)"|([\w./-]+))""")  # params.KEY in a search filter


def _params_elsewhere(where: str) -> str:
    """`` (no run logs a param lr: did you mean params.optimizer.lr?)`` where the filter ``where`` names a param that
    no run logs, whose name is a config key's elsewhere (:func:`cifar.config.key_paths`); else ``""``."""
    from cifar.config import key_paths, keys_named

    logged = key_paths() | set(MODEL_SIZE_PARAMS) | set(PRESET_GROUPS)
    hints = []
    for match in _FILTERED_PARAM.finditer(where):
        key = next(filter(None, match.groups()))
        if key not in logged and (elsewhere := keys_named(key)):
            hints.append(f"no run logs a param {key}: did you mean {' or '.join(f'params.{p}' for p in elsewhere)}?")
    return f" ({'; '.join(hints)})" if hints else ""


def of_sweeps(reports: list[Report]) -> Report:
    """Several sweeps' reports as one: their runs in one table, best first (of those that tie, in the order of the
    sweeps given, then each sweep's own), and their studies' lines; a sweep column tells them apart."""
    if len(reports) == 1:
        return reports[0]
    rows = sorted((r for report in reports for r in report.rows),
                  key=lambda r: 1.0 if r.val_acc is None else -r.val_acc)  # no score: last
    studies = [report.study for report in reports if report.study]
    return Report("; ".join(report.title for report in reports), rows, "\n\n".join(studies) or None)


def checked_filter(where: str) -> str:
    """``--filter``, refused (UserError) where MLflow's search cannot parse it (spaces alone too); "": none."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    try:
        SearchUtils.parse_search_filter(where)
    except MlflowException as err:
        raise UserError(f"--filter {where}: {first_line(err).rstrip('.')}: give an MLflow search filter, as in the "
                        "MLflow UI's search box: params.model.name = 'resnet18' and metrics.\"test/acc\" > 0.8 (the "
                        "values of params and tags quoted, and a key with / or - in it)") from err
    return where.strip()


def of_sweep(client, parent, jobs: list, best_run_id: str | None, study: str | None) -> Report:
    """The report of the sweep whose parent run is ``parent``, of its ``jobs``' runs: best first, and of those that
    tie, ``best_run_id``'s (the sweep's pick), then the first started; ``study`` is its study's line."""
    jobs = sorted(jobs, key=functools.partial(_best_first, best_run_id))
    sweeps = {parent.info.run_id: parent}
    return Report(f"Sweep {parent.info.run_name!r} ({parent.info.run_id})", [row(r, client, sweeps) for r in jobs],
                  study)


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    store = without_passwords(client.tracking_uri)
    if experiment is None:
        raise NothingToReport(f"no MLflow experiment named {name!r} in {store}{_other_experiments(client)}")
    if experiment.lifecycle_stage == "deleted":  # its runs with it: none to report
        raise NothingToReport(f"experiment {name!r} was deleted from {store}: restore it with `mlflow "
                              f"experiments restore --experiment-id {experiment.experiment_id}`")
    return experiment.experiment_id


def _other_experiments(client) -> str:
    """The experiments that a store has, and how to report one (``debug=smoke`` runs log to ``debug``, say)."""
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")  # MLflow's, made with the store
    if not names:
        return ""
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"; it has {shown}: give --experiment {names[0] if len(names) == 1 else 'NAME'}"


def _best_first(best_run_id: str | None, run) -> tuple[float, bool, int]:
    """The order of the report's rows: best val/best_acc first; of those that tie, the sweep's best job (its
    parent run's pick), then the first started."""
    return -run.data.metrics.get(BEST_VAL_ACC, -1.0), run.info.run_id != best_run_id, run.info.start_time


def _study_line(tags: dict[str, str]) -> str | None:
    """The sweep's Optuna study summed up from its storage; None for a sweep without a study."""
    name, storage = tags.get(STUDY_NAME_TAG), tags.get(STUDY_STORAGE_TAG)
    if name is None or storage is None:
        return None
    shown = without_passwords(storage)  # a sweep from before passwords were left out of tags has it
    if storage.startswith(SQLITE) and not Path(storage.removeprefix(SQLITE)).exists():
        return f"Optuna study `{name}`: its storage {shown} is gone"
    if reason := unusable(storage):
        return f"Optuna study `{name}`: its storage {shown} cannot be read: {reason}"
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return study_line(optuna.load_study(study_name=name, storage=storage), shown)
    except SQLAlchemyError as err:  # a database that refuses the connection (no password given, say)
        return f"Optuna study `{name}`: its storage {shown} cannot be read ({first_line(err)})"


def study_line(study, storage: str) -> str:
    """An Optuna study summed up: its trials by state, and its best value, trial and parameters; ``storage`` as
    shown (without a password)."""
    from cifar.study import summary

    study_summary = summary(study)
    counts = ", ".join(f"{count} {state}" for state, count in study_summary["trials"].items())
    line = f"Optuna study `{study.study_name}` ({storage}): {counts}"
    if "best_value" in study_summary:
        params = ", ".join(f"{k}={v}" for k, v in study_summary["best_params"].items())
        line += f"; best value {study_summary['best_value']:.4f} (trial {study_summary['best_trial']}): {params}"
    return line


SWEEPS = f"tags.`{SWEEP_DIR_TAG}` != ''"  # a search filter: sweeps' parent runs


def _latest_sweep(client, experiment_name: str):
    parents = client.search_runs(
        [_experiment_id(client, experiment_name)], filter_string=SWEEPS,
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not parents:
        raise NothingToReport(f"experiment {experiment_name!r} has no sweep yet: run one with `python -m cifar.train "
                              "-m ...`, or report every run with --all")
    return parents[0]


def _chosen_sweep(client, run_id: str):
    """The parent run ``--sweep`` names (by its id, or by the sweep's dir: :func:`_recorded_sweep`); a UserError
    where it names no run, or a job's run."""
    run = existing_run(client, run_id)
    if run is None:
        raise UserError(f"--sweep {run_id}: no such MLflow run in {client.tracking_uri}: give a "
                        "sweep's parent run id (in a report's title, or the MLflow UI), or leave --sweep out for the "
                        "latest sweep")
    if SWEEP_DIR_TAG not in run.data.tags:
        parent = run.data.tags.get("mlflow.parentRunId")
        fix = f"give --sweep {parent}, its sweep" if parent else "give a sweep's parent run id, or use --all"
        raise UserError(f"--sweep {run_id}: run {run.info.run_name!r} is not a sweep's parent run: {fix}")
    return run


def _recorded_sweep(sweep_dir: str) -> dict:
    """What a sweep's dir records of it (:func:`cifar.tracking.read_sweep`): its parent run and its store."""
    recorded = read_sweep(sweep_dir)
    if recorded is None:
        raise UserError(sweep_near(Path(sweep_dir), "--sweep") or (
            f"--sweep {sweep_dir}: not a sweep's dir (it has no {SWEEP_FILE}): give the dir of a `python -m "
            "cifar.train -m` sweep, or its parent run id"))
    return recorded


def row(run, client=None, sweeps: dict | None = None) -> Row:
    """A run's row; ``client`` reads the metrics so far of a job that did not finish (still running, or stopped or
    failed and not resumed; without it, it has none), and ``sweeps`` (parent runs by their ids) names the sweep of a
    job."""
    metrics, info, tags = run.data.metrics, run.info, run.data.tags
    sweep_id = tags.get("mlflow.parentRunId")
    parent = (sweeps or {}).get(sweep_id)
    val_acc, epochs = metrics.get(BEST_VAL_ACC), int(metrics["epochs_run"]) if "epochs_run" in metrics else None
    if info.status != "FINISHED" and epochs is None and client is not None:
        val_acc, epochs = _so_far(client, info.run_id)
    return Row(
        run_id=info.run_id,
        name=info.run_name or info.run_id,
        val_acc=val_acc,
        test_acc=metrics.get("test/acc"),
        epochs=epochs,
        state=run_state(run),
        seconds=wall_seconds(run),
        params=dict(run.data.params),
        tags={key: value for key, value in tags.items() if not is_own_tag(key)},
        sweep_id=sweep_id,
        sweep=(parent.info.run_name or sweep_id) if parent else sweep_id,
        trial=int(tags[TRIAL_NUMBER_TAG]) if TRIAL_NUMBER_TAG in tags else None,
        data=tags.get(DATA_HASH_TAG, "")[:DATASET_DIGEST_CHARS] or None,
        config=_config(run.data.params, tags.get(DATA_HASH_TAG)),
        fixed=_fixed_overrides(parent),
    )


def _fixed_overrides(parent) -> tuple[str, ...]:
    """The overrides that the sweep of parent run ``parent`` gave every job; none for a sweep from before they were
    tagged (or for no sweep)."""
    try:
        return tuple(json.loads(parent.data.tags[FIXED_OVERRIDES_TAG])) if parent else ()
    except (KeyError, ValueError):  # not tagged, or not by this code
        return ()


def _config(params: dict[str, str], data_hash: str | None) -> tuple | None:
    """What a run trained, but its seed: the params that name the training (as its run name's overrides do) and
    its data. Runs of one config and other seeds share it."""
    if "seed" not in params:
        return None
    return data_hash, tuple(sorted((k, v) for k, v in params.items() if _sets_the_configuration(k)))


def _sets_the_configuration(key: str) -> bool:
    """Whether ``key`` tells configurations apart: it changes what is trained, and is not the seed."""
    return key != "seed" and names_the_training(key)


def _configuration_name(run_names: list[str], fixed: Iterable[str] = ()) -> str:
    """A configuration's name, from its runs' names (best run first) and the overrides that their sweeps ``fixed``.
    The runs trained alike, so an override that changes the training holds for all of them wherever it is named: a
    run's name gives all such overrides, a sweep job's only its swept ones, and its sweep the others. The name joins
    them, in the first spelling of each key, but the seed; overrides that change nothing trained
    (``trainer.threads=2``, a tag) are left out, and names of one's own are kept."""
    overrides: dict[str, str] = {}
    own_names: set[str] = set()
    for part in [part for name in run_names for part in _OVERRIDE_SEPARATOR.split(name)] + list(fixed):
        if "=" not in part:
            own_names.add(part)
        elif _sets_the_configuration(key := override_key(part)):
            overrides.setdefault(key, part)
    named = sorted(own_names - {DEFAULTS_NAME}) + [",".join(overrides[key] for key in sorted(overrides))]
    return " / ".join(name for name in named if name) or DEFAULTS_NAME


_OVERRIDE_SEPARATOR = re.compile(r",(?=[\w.]+=)")  # between the overrides of a run's name: a value may hold a comma


def wall_seconds(run) -> float | None:
    """The wall time of a run, over its processes where it was stopped and resumed (its MLflow run spans the
    time between them too); up to its last epoch for a run still running, or stopped and not resumed. A run of
    code before run_seconds was logged: its MLflow run's span, once ended."""
    if RUN_SECONDS in run.data.metrics:
        return run.data.metrics[RUN_SECONDS]
    return (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None


def _so_far(client, run_id: str) -> tuple[float | None, int | None]:
    """The best validation accuracy and the epochs of a job still running, stopped or failed, from its per-epoch
    metrics (its val/best_acc and epochs_run are logged when it finishes)."""
    val_acc = [m.value for m in client.get_metric_history(run_id, "val/acc")]
    epochs = {m.step for m in client.get_metric_history(run_id, "train/loss")}  # an epoch's step is its number
    return max(val_acc, default=None), len(epochs) or None


def run_state(run) -> str:
    """A job's state as the report gives it: pruned (by its pruner, or diverged), else its MLflow status (finished,
    failed, killed, running)."""
    return "pruned" if run.data.tags.get(PRUNED_TAG) == "true" else run.info.status.lower()


def to_markdown(report: Report) -> str:
    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.2%}"

    data = report.has_several_data
    lines = [f"### {report.title}", ""]
    if report.study:
        lines += [report.study, ""]
    lines += _table([
        *[("sweep", "---", lambda r: r.sweep or "")] * report.has_several_sweeps,
        *[("trial", "---:", lambda r: "" if r.trial is None else str(r.trial))] * report.has_trials,
        ("run", "---", lambda r: r.name),
        *[("data", "---", lambda r: r.data or "")] * data,
        ("best val acc", "---:", lambda r: pct(r.val_acc)),
        ("test acc", "---:", lambda r: pct(r.test_acc)),
        ("epochs", "---:", lambda r: "" if r.epochs is None else str(r.epochs)),
        ("state", "---", lambda r: r.state),
        ("wall time", "---:", lambda r: "" if r.seconds is None else f"{r.seconds:.0f} s"),
    ], report.rows)
    if repeated := repeated_configs(report.rows):
        p_values = dict(zip(map(id, repeated), against_best(repeated)))
        adjusted = sum(p is not None for p, _ in p_values.values()) > 1
        lines += ["", "#### Over seeds: each configuration that finished more than once, mean ± standard deviation", ""]
        lines += _table([
            *[("sweep", "---", lambda g: "; ".join(g.sweeps))] * report.has_several_sweeps,  # as the runs' table
            ("run", "---", lambda g: g.name),
            *[("data", "---", lambda g: g.data or "")] * data,
            ("runs", "---:", lambda g: str(g.runs)),
            ("best val acc, %", "---:", lambda g: _spread(g.val_acc)),
            ("test acc, %", "---:", lambda g: _spread(g.test_acc)),
            ("p against the first", "---:", lambda g: _p_value(p_values[id(g)][0])),
            *[("p by Holm's method", "---:", lambda g: _p_value(p_values[id(g)][1]))] * adjusted,
        ], repeated)
    return "\n".join(lines) + "\n"


def against_best(repeated: list[Repeated]) -> list[tuple[float | None, float | None]]:
    """Each configuration's p-value against the first, the best (:meth:`Repeated.p_against`), plain and adjusted by
    Holm's method for the comparisons made together (those that give one): both None for the first, and where the
    runs do not say."""
    plain = [None, *(config.p_against(repeated[0]) for config in repeated[1:])]
    adjusted = iter(holm([p for p in plain if p is not None]))
    return [(p, None if p is None else next(adjusted)) for p in plain]


def _table(columns: list[tuple[str, str, Callable[[Any], str]]], items: list) -> list[str]:
    """A markdown table's lines: a column a (header, alignment, cell of an item), a line an item."""
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(header for header, _, _ in columns), "|" + "|".join(align for _, align, _ in columns) + "|",
            *(line(cell(item) for _, _, cell in columns) for item in items)]


def to_csv(report: Report) -> str:
    """The report's runs as CSV, best first, for a spreadsheet or pandas: a row each, with its id, its sweep (id and
    name), trial and data where the markdown table has them, a column for each param and each tag of one's own
    (``tags.KEY``) whose value is not the same in every run (the params swept, seed included), and its scores as
    fractions, unrounded, and its wall time in seconds."""
    rows, sweeps, trials, data = report.rows, report.has_several_sweeps, report.has_trials, report.has_several_data
    params, tags = _differing([row.params for row in rows]), _differing([row.tags for row in rows])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run_id", "run", *["sweep_id", "sweep"] * sweeps, *["trial"] * trials, *["data"] * data,
                     *params, *(f"tags.{key}" for key in tags), "best_val_acc", "test_acc", "epochs", "state",
                     "wall_seconds"])
    for row in rows:
        writer.writerow([row.run_id, row.name, *[row.sweep_id, row.sweep] * sweeps, *[row.trial] * trials,
                         *[row.data] * data, *(row.params.get(key) for key in params),
                         *(row.tags.get(key) for key in tags), row.val_acc, row.test_acc, row.epochs, row.state,
                         None if row.seconds is None else round(row.seconds, 3)])
    return out.getvalue()


def _differing(values: list[dict[str, str]]) -> list[str]:
    """The keys whose value is not the same in every one of ``values`` (missing from some counts), sorted."""
    keys = sorted({key for each in values for key in each})
    return [key for key in keys if len({each.get(key) for each in values}) > 1]


def _p_value(p: float | None) -> str:
    return "" if p is None else f"{p:.2g}"


def _spread(accuracies: list[float]) -> str:
    if not accuracies:
        return ""
    mean = f"{100 * statistics.fmean(accuracies):.2f}"
    return f"{mean} ± {100 * statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else mean


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment of the latest sweep or --all (default: {DEFAULT_EXPERIMENT}); "
                             "a --sweep is read in its own")
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else the store of a "
                                               "--sweep dir, else sqlite:///mlflow.db)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--sweep", metavar="RUN_ID_OR_DIR", action="append", type=os.path.expanduser,
                       help="the sweep's parent run id, or its sweep dir (default: the latest sweep); given again, "
                            "each sweep's runs in one table")
    scope.add_argument("--all", action="store_true", help="every training run of the experiment")
    parser.add_argument("--filter", default="", metavar="FILTER",
                        help="only the runs that this MLflow search filter finds, as in the MLflow UI's search box: "
                             "'params.model.name = \"resnet18\" and metrics.\"test/acc\" > 0.8'")
    parser.add_argument("--csv", action="store_true",
                        help="the runs as CSV: a row each, a column for each param that differs between them")
    parser.add_argument("--output", type=os.path.expanduser,
                        help="also write the table to this file (as CSV where it ends in .csv)")
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    try:
        where = checked_filter(args.filter)  # what was typed, before what it names: the store, the sweep
        if args.sweep is None:
            uri = existing_store(chosen_store(args.tracking_uri, None))
            report = collect(MlflowClient(tracking_uri=uri), args.experiment, args.all, where)
        else:
            reports: dict[str, Report] = {}  # by parent run: a sweep given twice (by its id and its dir) once
            for named in args.sweep:
                sweep = _recorded_sweep(named) if Path(named).is_dir() else None
                uri = existing_store(chosen_store(args.tracking_uri, sweep))  # each sweep's dir names its own
                client = MlflowClient(tracking_uri=uri)
                parent = _chosen_sweep(client, sweep["parent_run_id"] if sweep else named)
                if parent.info.run_id not in reports:
                    reports[parent.info.run_id] = sweep_report(client, parent, where)
            report = checked(of_sweeps(list(reports.values())), where)
    except UserError as err:
        print(f"cifar.report: error: {err}", file=sys.stderr)
        return 2
    except NothingToReport as empty:
        print(f"cifar.report: nothing to report: {empty}", file=sys.stderr)
        return 1
    except store_errors() as err:
        print(f"cifar.report: error: {unreadable_store(uri, err)}", file=sys.stderr)
        return 2
    as_csv = args.csv or (args.output or "").lower().endswith(".csv")
    table = to_csv(report) if as_csv else to_markdown(report)
    print(table, end="")
    if args.output:
        try:
            if args.output.endswith(("/", os.sep)):  # a folder, where Path() would drop the / and write a file
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), args.output)
            atomic_write_text(Path(args.output), table)
        except OSError as err:
            print(f"cifar.report: error: cannot write --output {args.output} ({os_reason(err)}): "
                  "give a file path in a writable folder", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    exit_with_status_of(main)
