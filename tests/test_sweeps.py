"""Optuna sweeps end to end on tiny fake data: trials, pruning, divergence, resume, parallel jobs."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from cifar import report
from cifar.parallel import LOCAL_SUBMITIT_LAUNCHER, concurrent_jobs, cpu_cores
from tests.conftest import (
    CALLBACK_FAILED, all_runs, assert_tags_are_the_runs_own, backdate_heartbeat, client_for, load_study,
    run_without_module, running_trial, signal_process_of, start, sweep_parent_and_children, wait_until,
)

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def grid_sweep(cli, *overrides: str):
    """An Optuna sweep over the grid given on the command line; its study is stored in the sweep dir.

    Returns the process and the study's trials by learning rate.
    """
    proc = cli("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.direction=maximize",
               *overrides, multirun=True)
    sweep_dir = cli.tmp_path / "sweep"
    study = optuna.load_study(study_name=str(sweep_dir), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    return proc, {t.params["optimizer.lr"]: t for t in study.trials}


def sweep_runs(cli):
    """The sweep's parent run and its children, by trial number (one run per trial)."""
    parent, children = sweep_parent_and_children(all_runs(cli))
    by_trial = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert len(by_trial) == len(children)
    return parent, by_trial


def best_params_tagged(parent):
    """The best trial's parameters as the sweep's parent run records them (tags ``best.<key>``)."""
    return {key.removeprefix("best."): value for key, value in parent.data.tags.items() if key.startswith("best.")}


def test_optuna_preset_runs_a_tpe_search_with_one_child_run_per_trial(cli):
    # data.batch_size=32 from the fixture fixes that key (the fake train set has 160 images);
    # the sweeper samples the rest of the preset's search space.
    cli("hparams_search=optuna", "hydra.sweeper.n_trials=4", "trainer.epochs=1", multirun=True)
    study = load_study(cli)
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    parent, children = sweep_runs(cli)
    assert sorted(children) == [0, 1, 2, 3]  # nothing swept on the command line: the study names the sweep
    assert parent.info.run_name == (f"sweep {cli.experiment}-optuna data.val_size=40 data.batch_size=32 "
                                    "hparams_search=optuna trainer.epochs=1")
    for number, child in children.items():
        trial = study.trials[number]
        assert child.data.tags["optuna.trial_state"] == "COMPLETE"
        assert child.data.metrics["val/best_acc"] == trial.value  # the objective, as logged in MLflow
        lr = trial.params["optimizer.lr"]  # named to 4 significant digits, logged with every digit
        assert f"optimizer.lr={lr:.4g}" in child.info.run_name and child.data.params["optimizer.lr"] == str(lr)
        assert trial.user_attrs["hydra_job"] == child.data.tags["hydra.output_dir"]
        assert child.data.tags["hydra.output_dir"] == str(cli.tmp_path / "sweep" / str(number))  # named by trial
    best = study.best_trial
    assert parent.data.tags["optuna.study_name"] == f"{cli.experiment}-optuna"
    assert_tags_are_the_runs_own(parent, *children.values())
    assert parent.data.tags["optuna.best_trial"] == str(best.number)
    assert parent.data.metrics["study/best_value"] == best.value
    assert best_params_tagged(parent) == {key: str(value) for key, value in best.params.items()}
    artifacts = {a.path for a in client_for(cli).list_artifacts(parent.info.run_id, "optuna")}
    assert artifacts == {"optuna/optimization_history.png", "optuna/param_importances.png"}
    logged = Path(client_for(cli).download_artifacts(parent.info.run_id, "report/runs.md", str(cli.tmp_path))
                  ).read_text()  # the report, its study's line too
    assert logged == report.to_markdown(report.collect(client_for(cli), cli.experiment, False))
    assert f"Optuna study `{cli.experiment}-optuna`" in logged and "4 complete" in logged


@pytest.mark.slow
def test_of_trials_that_tie_the_parent_run_and_the_report_pick_the_studys_best_trial(cli):
    # mlflow.log_plots changes no metric: every trial scores the same
    cli("hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.direction=maximize",
        "hydra/sweeper/pruner=none", "hydra.sweeper.n_trials=3", "mlflow.log_plots=choice(true,false)",
        "trainer.epochs=1", "mlflow.log_model=false", multirun=True)
    sweep_dir = cli.tmp_path / "sweep"
    study = optuna.load_study(study_name=str(sweep_dir), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    parent, children = sweep_runs(cli)
    assert len(children) == 3 and len({c.data.metrics["val/best_acc"] for c in children.values()}) == 1
    best = study.best_trial.number
    assert parent.data.tags["best_run_id"] == children[best].info.run_id  # was the last trial's run
    assert parent.data.tags["optuna.best_trial"] == str(best)
    assert report.collect(client_for(cli), cli.experiment, False).rows[0].trial == best


@pytest.mark.slow
def test_a_trial_that_the_pruner_stops_is_pruned_in_the_study_and_mlflow(cli):
    # lr=1e-12 never learns (its val acc stays that of a constant guess, 0.15 here); lr=3e-3
    # passes 0.25 from epoch 1. Both trials run at once in two joblib worker processes, so the
    # pruned job reached its trial through the storage.
    proc, by_lr = grid_sweep(
        cli, "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.25",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
        "optimizer=adam", "scheduler=none", "optimizer.lr=choice(3e-3,1e-12)", "trainer.epochs=3",
    )
    assert by_lr[3e-3].state == COMPLETE and len(by_lr[3e-3].intermediate_values) == 3
    pruned = by_lr[1e-12]
    assert pruned.state == PRUNED and list(pruned.intermediate_values) == [1]
    assert pruned.value == pruned.intermediate_values[1] < 0.25  # Optuna keeps the last reported value
    _, children = sweep_runs(cli)
    run = children[pruned.number]
    assert run.info.status == "FINISHED" and run.data.tags["pruned"] == "true"
    assert run.data.tags["optuna.trial_state"] == "PRUNED"
    assert_tags_are_the_runs_own(*children.values())
    assert run.data.metrics["epochs_run"] == 1 and "test/acc" not in run.data.metrics
    assert "pruned" not in children[by_lr[3e-3].number].data.tags
    assert f"Trial {pruned.number} pruned after epoch 1" in proc.stderr + proc.stdout
    for notice in ("Skipped telling", "Using an existing study"):  # Optuna's, of what the sweep says itself
        assert notice not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_a_diverging_trial_is_pruned_and_the_sweep_goes_on(cli):
    proc, by_lr = grid_sweep(
        cli, "optimizer=sgd", "scheduler=none", "optimizer.lr=choice(0.01,1e12)", "mlflow.log_plots=false"
    )
    assert by_lr[0.01].state == COMPLETE and by_lr[1e12].state == PRUNED
    assert "diverged (train/loss is nan" in proc.stderr + proc.stdout
    parent, children = sweep_runs(cli)
    diverged = children[by_lr[1e12].number]
    assert diverged.info.status == "FAILED" and diverged.data.tags["diverged"] == "true"
    assert_tags_are_the_runs_own(diverged)
    finished = children[by_lr[0.01].number]
    assert finished.info.status == "FINISHED" and "test/acc" in finished.data.metrics
    assert client_for(cli).list_artifacts(finished.info.run_id, "plots") == []  # mlflow.log_plots=false
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/jobs_pruned"] == 1
    best_acc = finished.data.metrics["val/best_acc"]  # the sweep's last line gives the states as the report does
    assert (f"Sweep ended: 2 jobs (1 finished, 1 pruned); best val/best_acc {best_acc:.4f}: {finished.info.run_name} "
            f"(MLflow run {finished.info.run_id}). All of them: python -m cifar.report --sweep "
            f"{parent.info.run_id}\n") in proc.stdout


@pytest.mark.slow
def test_a_search_whose_trials_all_diverged_ends_without_best_parameters_and_leaves_none_running(cli):
    proc, by_lr = grid_sweep(cli, "optimizer=sgd", "scheduler=none", "optimizer.lr=choice(1e11,1e12)",
                             "trainer.epochs=1")
    assert [t.state for t in by_lr.values()] == [PRUNED, PRUNED]
    said = proc.stdout + proc.stderr
    assert "No trial of study" in said and "completed (all pruned or failed): no best parameters" in said
    parent, _ = sweep_runs(cli)
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep/jobs_pruned"] == 2


@pytest.mark.parametrize("override,message", [
    ("hydra.sweeper.direction=minimize",  # searched for the worst trials (and sideways is refused alike)
     "hydra.sweeper.direction=minimize: a trial's value is one number, its val/best_acc, which the search maximizes: "
     "drop hydra.sweeper.direction, or set it to maximize"),
    ("hydra.sweeper.direction=[maximize,maximize]",  # failed each trial with a traceback
     "hydra.sweeper.direction=[maximize,maximize]: a trial's value is one number, its val/best_acc, "),
    ("data.val_size=0", "data.val_size=0 leaves the trials no validation accuracy to optimise and prune on: "
                        "set data.val_size > 0 for an Optuna sweep"),
    ("trainer.resume=true", "trainer.resume=true: an Optuna sweep resumes its study when the same command runs "
                            "again, without it: drop trainer.resume"),
    ("hydra.sweeper.storage=foo://me:s3cret@x",  # named without its password
     "hydra.sweeper.storage=foo://me@x cannot be used (NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:foo): "
     "give a writable sqlite:///PATH or a reachable database URL"),
    ("hydra.sweeper.storage=sqlite:////dev/null/optuna.db", "hydra.sweeper.storage=sqlite:////dev/null/optuna.db "
                                                            "cannot be used (FileExistsError: "),  # not a folder
    ("data.path=nowhere data.download=false", "No CIFAR-10 data in "),
    ("optimizer=adam optimizer.lr=1e-3 optimizer.weight_decay=0 data.batch_size=32 scheduler=none",  # all fixed
     "the Optuna sweep searches no parameter, so its 20 trials would train the same config: give it one to search, "
     "as optimizer.lr='tag(log, interval(1e-4, 1e-1))' (or a preset: hparams_search=optuna), or drop -m to train it "
     "once"),
    ("data.val_size=choice(40,200)",  # a probed trial holds out all 200 of the fake data's training images
     "data.val_size=200 must be smaller than the training set (200 images): lower data.val_size"),
    pytest.param("trainer.device=choice(cpu,mps)", "trainer.device=mps but MPS is not available here",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    ("hydra.sweeper.max_failure_rate=2", "hydra.sweeper.max_failure_rate=2.0 is out of range: it must be in [0, 1]"),
    ("hydra.sweeper.pruner.n_startup_trials=-1",  # Optuna's ValueError, raised once the first trial was asked for
     "hydra.sweeper.pruner: Number of startup trials cannot be negative, but got n_startup_trials=-1: fix its "
     "settings (hydra.sweeper.pruner.*)"),
    ("hydra/sweeper/sampler=nsgaii hydra.sweeper.sampler.population_size=1",  # a traceback as the sweeper started
     "hydra.sweeper.sampler: `population_size` must be greater than or equal to 2: fix its settings "
     "(hydra.sweeper.sampler.*)"),
    ("hydra.sweeper.params.optimizer.lr=interval(1e-3,0.1)",  # a range for the sweeper's params, not a sweep's
     "hydra.sweeper.params.optimizer.lr=interval(1e-3,0.1): Hydra's own settings take one value, not a sweep: give "
     "the search range as optimizer.lr='interval(1e-3,0.1)', which replaces the preset's"),
    ("hydra.job.chdir=true,false", "hydra.job.chdir=true,false: Hydra's own settings take one value, not a sweep: "
                                   "give hydra.job.chdir one value, and run a command for each"),
    ("optimizer.lr=tag(log,interval(0,0.1))", "optimizer.lr=tag(log,interval(0,0.1)): `low > 0` must hold for "
                                              "`log=True`, but got (low=0.0, high=0.1): fix the search range"),
    ("hydra/sweeper/sampler=grid", "hydra/sweeper/sampler=grid takes choices and ranges with a step, not the "
                                   "intervals of optimizer.lr, optimizer.weight_decay: give each as choice(...) or "
                                   "range(start, stop, step), or choose another sampler"),
    ("experiment=airbench",  # its keys are SGD's: every trial of Adam or AdamW is refused
     "the search space's trial optimizer=adam optimizer.lr=0.0001007 optimizer.weight_decay=1.009e-06 "
     "scheduler=none: In 'experiment/airbench': Key 'momentum' not in 'AdamConfig' (key: optimizer.momentum)"),
    ("optimizer.lr=interval(-1.0,0.1)",  # in place of the preset's range: trials near its low end are refused
     "the search space's trial optimizer=adam optimizer.lr=-0.9989 optimizer.weight_decay=1.009e-06 scheduler=none: "
     "optimizer.lr=-0.9989 is out of range: it must be > 0"),
    pytest.param("hydra.sweeper.storage=postgresql://me:s3cret@127.0.0.1:1/optuna",  # nothing listens on port 1
                 "hydra.sweeper.storage=postgresql://me@127.0.0.1:1/optuna cannot be used: nothing answers at "
                 "127.0.0.1:1 (Connection refused): start its server, or correct the URL",
                 marks=[pytest.mark.slow,  # 13 s: the server is tried for stores.ANSWER_WAIT_S (test_stores: at once)
                        pytest.mark.skipif(importlib.util.find_spec("psycopg") is None,
                                           reason="the postgres extra is not installed (uv sync --extra postgres)")]),
])
def test_a_sweep_with_bad_settings_fails_before_any_run_or_study(cli, override, message):
    proc = cli("hparams_search=optuna", *override.split(), multirun=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"cifar.train: error: {message}") and proc.stderr.count("\n") == 1
    assert all_runs(cli) == [] and not (cli.tmp_path / "optuna.db").exists()
    assert not (cli.tmp_path / "sweep").exists()  # refused before the sweep dir is made, or removed with it


def test_an_optuna_sweep_without_a_direction_maximizes_its_trials_validation_accuracy():
    from cifar.config import compose_with_hydra
    from cifar.sweeper import checked_directions

    _, hydra_cfg = compose_with_hydra(["hydra/sweeper=optuna"])  # as a search preset of one's own that sets none
    assert checked_directions(hydra_cfg.sweeper) == ["maximize"]  # the stock sweeper's: minimize, the worst trials


def test_a_search_space_that_the_studys_earlier_trials_do_not_fit_is_refused_naming_both(tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from cifar import study as studies
    from cifar.errors import ConfigError

    hydra_cfg = OmegaConf.create({"sweeper": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "study_name": "s"},
                                  "sweep": {"dir": str(tmp_path / "sweep")}})
    batch = CategoricalDistribution((64, 128))
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    studies.check_study_fits(hydra_cfg, {"data.batch_size": batch}, {})  # no study yet
    study = optuna.create_study(study_name="s", storage=studies.sweep_storage(hydra_cfg)[0])
    study.add_trial(optuna.trial.create_trial(params={"data.batch_size": 64, "optimizer.lr": 1e-3},
                                              distributions={"data.batch_size": batch, "optimizer.lr": lr}, value=0.5))
    fits = {"data.batch_size": batch, "optimizer.lr": FloatDistribution(1e-5, 1.0, log=True),  # a wider range fits
            "optimizer.weight_decay": FloatDistribution(0.0, 0.1)}  # a new parameter too
    studies.check_study_fits(hydra_cfg, fits, {})
    for param, distribution, message in [
        ("data.batch_size", CategoricalDistribution((16, 32)),
         "data.batch_size=choice(16, 32) does not fit study s, whose trials searched it as choice(64, 128)"),
        ("optimizer.lr", FloatDistribution(1e-4, 1e-1),
         "optimizer.lr=interval(0.0001, 0.1) does not fit study s, whose trials searched it as tag(log, "
         "interval(0.0001, 0.1))"),
    ]:
        with pytest.raises(ConfigError) as refused:  # where the sweep's first trial raised Optuna's traceback
            studies.check_study_fits(hydra_cfg, {**fits, param: distribution}, {})
        assert str(refused.value) == (f"{message}: Optuna keeps a parameter's choices (and a range's log scale) for a "
                                      "study's life: search it as before, or start another study "
                                      "(hydra.sweeper.study_name=NAME)")


def test_a_trials_settings_leave_out_the_searched_ones_and_where_or_how_it_runs():
    from cifar import study as studies
    from cifar.config import compose

    config = compose(["trainer.threads=2", "trainer.resume=true", "data.path=elsewhere", "mlflow.experiment=e",
                      "diagnostics=all", "trainer.epochs=3"])
    settings = studies.trial_settings(config, ["optimizer", "data.batch_size"])
    assert settings["trainer.epochs"] == "3" and settings["model.name"] == "simplecnn" and settings["seed"] == "0"
    assert settings["model.channels"] == "[32, 64, 128]" and settings["data.augment.flip"] == "True"
    assert not [key for key in settings if key.startswith(("optimizer.", "mlflow.", "diagnostics.", "hydra"))]
    assert not {"data.batch_size", "data.path", "trainer.threads", "trainer.resume"} & settings.keys()
    assert "scheduler.name" in settings  # not searched


def test_a_changed_config_is_named_by_a_switched_groups_name_and_by_the_model_size_only_where_alone():
    from cifar.tracking import changed_settings

    before = {"model.name": "simplecnn", "model.hidden": "256", "model.parameters": "620586",
              "model.flops_per_image": "21698964", "optimizer.lr": "0.003", "trainer.epochs": "2"}
    assert changed_settings(before, {**before, "trainer.whiten": "True"}) == []  # a key of newer code
    switched = {**before, "model.name": "resnet9", "model.hidden": "512", "model.parameters": 6573120,
                "model.flops_per_image": 758532864, "optimizer.lr": 5e-4}
    assert changed_settings(before, switched) == ["model.name", "optimizer.lr"]
    assert changed_settings(before, {**before, "model.hidden": 512, "model.parameters": 700000}) == ["model.hidden"]
    assert changed_settings(before, {**before, "model.parameters": 700000}) == ["model.parameters"]  # the code's


def test_a_sweep_whose_settings_differ_from_its_studys_trials_is_refused_naming_both(tmp_path):
    from cifar import study as studies
    from cifar.errors import ConfigError

    hydra_cfg = OmegaConf.create({"sweeper": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "study_name": "s"},
                                  "sweep": {"dir": str(tmp_path / "sweep")}})
    first = {"model.name": "simplecnn", "model.hidden": "256", "trainer.epochs": "2", "data.val_size": "200"}
    study = optuna.create_study(study_name="s", storage=studies.sweep_storage(hydra_cfg)[0])
    studies.record_trial_settings(hydra_cfg, first)
    studies.fail_unrun(study, study.ask(), studies.REFUSED_ATTR)  # a trial refused: it does not count, nor do they
    fixed = {**first, "trainer.epochs": "3"}
    studies.check_study_fits(hydra_cfg, {}, fixed)  # no trial ran with the first settings
    studies.record_trial_settings(hydra_cfg, fixed)  # the rerun's hold
    study.add_trial(optuna.trial.create_trial(value=0.5))
    studies.record_trial_settings(hydra_cfg, first)  # kept from here on: a trial ran with them
    assert studies.load_sweep_study(hydra_cfg)[0].user_attrs[studies.SETTINGS_ATTR] == fixed
    studies.check_study_fits(hydra_cfg, {}, fixed)
    studies.check_study_fits(hydra_cfg, {}, {"model.name": "simplecnn", "trainer.epochs": "3"})  # newly searched
    studies.check_study_fits(hydra_cfg, {}, {**fixed, "trainer.whiten": "True"})  # a key of newer code
    with pytest.raises(ConfigError) as err:
        studies.check_study_fits(hydra_cfg, {}, {**first, "model.name": "resnet9", "model.hidden": "512"})
    assert str(err.value) == (
        "model.name=resnet9 trainer.epochs=2 does not fit study s, whose trials ran with model.name=simplecnn "
        "trainer.epochs=3: its sampler and pruner compare its trials, which must be trained alike but for the searched "
        "parameters: run it with its settings, or start another study (hydra.sweeper.study_name=NAME)")


@pytest.mark.slow
def test_a_sweep_that_its_study_does_not_fit_stops_before_any_run_or_trial(cli):
    cli("hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", "data.batch_size=choice(16,32)",
        multirun=True)
    proc = cli("hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.epochs=1", "data.batch_size=choice(8,16)",
               multirun=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("cifar.train: error: data.batch_size=choice(8, 16) does not fit study ")
    assert [t.state for t in load_study(cli).trials] == [COMPLETE]  # where a trial was left RUNNING, for good
    proc = cli("hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.epochs=2", "data.batch_size=choice(16,32)",
               multirun=True, check=False)  # where the study took a 2-epoch trial beside the 1-epoch one
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("cifar.train: error: trainer.epochs=2 does not fit study ")
    assert [t.state for t in load_study(cli).trials] == [COMPLETE]
    assert len(all_runs(cli)) == 2  # the first sweep's parent run and trial


def test_the_probed_trials_take_every_choice_and_each_range_end_from_just_inside():
    from cifar.sweeper import sweeper_arguments
    from cifar.sweeper_impl import probe_trials, search_space

    params = {"optimizer": "choice(sgd, adamw, muon)", "optimizer.lr": "tag(log, interval(1e-4, 1))",
              "optimizer.momentum": "interval(0.8, 1.0)", "data.batch_size": "choice(64, 128)"}
    config = OmegaConf.create({"hydra": {"sweeper": {"params": params},
                                         "overrides": {"task": ["data.batch_size=32", "seed=1", "~trainer.threads"]}}})
    probes = probe_trials(*search_space(sweeper_arguments(config)))
    searched = [values for values, _ in probes]
    assert [values["optimizer"] for values in searched] == ["sgd", "adamw", "muon"]
    lows, highs = [searched[i]["optimizer.lr"] for i in (0, 2)], searched[1]["optimizer.lr"]
    assert lows[0] == lows[1] and 1e-4 < lows[0] < 1.02e-4 and 0.98 < highs < 1  # a 1e-3 inset, on the log scale
    assert [values["optimizer.momentum"] for values in searched] == [0.8002, 0.9998, 0.8002]  # < 1, as sampled
    for values, overrides in probes:  # as the stock sweeper writes a trial's job: the command line's key is fixed
        assert "data.batch_size" not in values
        assert overrides == (*(f"{k}={v}" for k, v in values.items()), "data.batch_size=32", "seed=1",
                             "~trainer.threads")


@pytest.mark.slow
def test_a_trial_whose_config_is_refused_fails_uncounted_before_its_job_and_stops_the_sweep(cli):
    # Each value passes in a trial of its own (the search space's check), but Nesterov without momentum is refused.
    # The grid's seed 3 draws that point last: the three others run first, and its tell ends the grid.
    proc = cli("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.seed=3",
               "hydra.sweeper.direction=maximize", "hydra.sweeper.n_jobs=1", "optimizer=sgd", "scheduler=none",
               "optimizer.nesterov=choice(true,false)", "optimizer.momentum=choice(0.9,0.0)", "mlflow.log_plots=false",
               multirun=True, check=False)
    sweep_dir = cli.tmp_path / "sweep"
    study = optuna.load_study(study_name=str(sweep_dir), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    *ran, refused = study.trials
    assert refused.params == {"optimizer.nesterov": True, "optimizer.momentum": 0.0}
    assert len(ran) == 3  # else Optuna draws the grid in another order: pick a seed that draws that point last
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"cifar.train: error: trial {refused.number} (optimizer.nesterov=True optimizer.momentum=0.0): "
        "optimizer.nesterov=True is out of range: it needs optimizer.momentum > 0: set optimizer.nesterov=false. "
        "Fix the override or the config file.")
    assert [t.state for t in ran] == [COMPLETE] * len(ran)  # the trials before it ran
    assert refused.state == optuna.trial.TrialState.FAIL and refused.user_attrs["refused"]
    assert not (sweep_dir / str(refused.number)).exists()  # its job never started
    from cifar import study as studies

    assert studies.counted_trials(study) == ran  # a rerun with the search fixed runs n_trials trials
    parent, children = sweep_runs(cli)
    assert sorted(children) == [t.number for t in ran]
    assert parent.info.status == ("FINISHED" if ran else "FAILED")  # FINISHED where a job finished


@pytest.mark.slow
def test_a_trial_whose_split_of_the_data_is_refused_fails_uncounted_before_its_job(cli):
    # Each value passes in a trial of its own (the probes: limit 100 with batch 32, limit 20 with batch 16), but a
    # batch of 32 is larger than 20 training images: the job refused that pair as it started.
    proc = cli("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.direction=maximize",
               "hydra.sweeper.n_jobs=1", "data.limit=choice(100,20)", "data.batch_size=choice(32,16)",
               "trainer.epochs=1", "mlflow.log_plots=false", multirun=True, check=False)
    sweep_dir = cli.tmp_path / "sweep"
    study = optuna.load_study(study_name=str(sweep_dir), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    *ran, refused = study.trials
    assert refused.params == {"data.limit": 20, "data.batch_size": 32}
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"cifar.train: error: trial {refused.number} (data.limit=20 data.batch_size=32): data.batch_size=32 is larger "
        "than the 20 training images: lower data.batch_size or raise data.limit")
    assert [t.state for t in ran] == [COMPLETE] * len(ran)
    assert refused.state == optuna.trial.TrialState.FAIL and refused.user_attrs["refused"]
    assert not (sweep_dir / str(refused.number)).exists()  # its job never started


@pytest.mark.slow
def test_a_job_that_fails_at_the_grids_last_point_stops_the_sweep_in_one_line(cli):
    # The grid's second trial, its last point, fails as its job starts (a file stands where its job dir goes): the
    # stock sweeper's tell of the failed trial ended in the error of the grid sampler's stop, and the trial was
    # left RUNNING in the study.
    sweep_dir = cli.tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "1").touch()
    proc = cli("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.direction=maximize",
               "hydra.sweeper.n_jobs=1", "optimizer.lr=choice(1e-3,2e-3)", multirun=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"cifar.train: error: cannot write {sweep_dir / '1'} ")
    study = optuna.load_study(study_name=str(sweep_dir), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [(t.number, t.state) for t in study.trials] == [(0, COMPLETE), (1, optuna.trial.TrialState.FAIL)]
    assert study.trials[1].user_attrs["killed"]  # not left RUNNING, and not counted: the same command runs it again


def test_a_trial_told_at_the_grids_end_is_told_without_the_stop_that_optuna_refuses_outside_optimize():
    from cifar import study as studies

    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1]}))
    trial = study.ask()
    trial.suggest_categorical("x", [1])
    with pytest.raises(RuntimeError, match="Study.stop"):  # Optuna's own tell, the grid's only point told
        type(study).tell(study, trial, state=optuna.trial.TrialState.FAIL)
    studies.tell(study, trial, state=optuna.trial.TrialState.FAIL)  # told already: skipped
    last = study.ask()
    last.suggest_categorical("x", [1])
    studies.tell(study, last, state=optuna.trial.TrialState.FAIL)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


def test_a_refused_sweep_removes_the_empty_folders_it_made_and_nothing_else(tmp_path):
    from cifar.files import remove_made
    from cifar.sweep_run import _make_sweep_dir

    day = tmp_path / "multirun" / "2026-12-03"
    (day / "09-00-00").mkdir(parents=True)  # an earlier sweep's, with its files
    (day / "09-00-00" / "optuna.db").write_text("")
    sweep_dir = day / "10-00-00" / "sub"
    config = OmegaConf.create({"trainer": {"resume": False}, "hydra": {"sweep": {"dir": str(sweep_dir)}}})
    made = _make_sweep_dir(config)
    assert made == day / "10-00-00" and sweep_dir.is_dir()
    remove_made(sweep_dir, made)
    assert not made.exists() and (day / "09-00-00" / "optuna.db").exists()


def test_a_study_storage_without_its_driver_fails_before_any_run_or_study(cli):
    storage = "postgresql://cifar:s3cret@db-host:5432/optuna"  # named in the error without its password
    proc = run_without_module(cli, "psycopg", "hparams_search=optuna", f"hydra.sweeper.storage={storage}",
                              f"mlflow.tracking_uri={cli.tracking_uri}", multirun=True)
    assert proc.returncode == 2
    assert proc.stderr == ("cifar.train: error: hydra.sweeper.storage=postgresql://cifar@db-host:5432/optuna cannot "
                           "be used: its database driver is not installed (No module named 'psycopg'): uv sync "
                           "--extra postgres, or pip install 'psycopg[binary]'\n")
    assert all_runs(cli) == []


@pytest.mark.slow
def test_rerunning_a_sweep_resumes_its_study_up_to_n_trials(cli):
    cli("hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", multirun=True)
    first = [(t.number, t.params, t.datetime_start) for t in load_study(cli).trials]
    proc = cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.epochs=1", "+mlflow.tags.phase=2",
               multirun=True)
    assert f"Study {cli.experiment}-optuna has 1 finished trial: running 2 more" in proc.stderr + proc.stdout
    # each trial's console lines are named by its number, as its dir is, not by its job's in this command (0, 1)
    assert [line.split("]")[0] for line in proc.stdout.splitlines() if " epoch 1/1 " in line] == ["[#1", "[#2"]
    study = load_study(cli)
    trials = study.trials
    assert [t.state for t in trials] == [COMPLETE] * 3
    assert [(t.number, t.params, t.datetime_start) for t in trials[:1]] == first  # not re-run
    # the seeded sampler was reseeded: the new trials do not replay the first one's samples
    assert all(t.params != old for t in trials[1:] for _, old, _ in first)
    parent, children = sweep_runs(cli)  # the study's parent run, taken up again
    assert sorted(children) == [0, 1, 2] and parent.data.metrics["sweep/jobs_finished"] == 3
    assert [children[n].data.tags.get("phase") for n in (0, 1, 2)] == [None, "2", "2"]  # a tag of the 2nd command
    assert parent.data.tags["phase"] == "2"  # where it stayed the first command's
    # the parent's summary follows the study's best trial, whichever run found it
    assert "raised" not in proc.stderr and parent.data.metrics["study/best_value"] == study.best_value
    assert best_params_tagged(parent) == {key: str(value) for key, value in study.best_trial.params.items()}


def test_the_best_parameters_tagged_are_those_of_the_latest_best_trial(cli):
    from cifar import sweep_run

    client = client_for(cli)
    run_id = client.create_run(client.create_experiment(cli.experiment)).info.run_id
    sweep_run._tag_best_params(client, run_id, {"optimizer": "adam", "optimizer.lr": 1e-3})
    sweep_run._tag_best_params(client, run_id, {"optimizer.lr": 5e-4})  # a key of the old best not sampled now
    assert best_params_tagged(client.get_run(run_id)) == {"optimizer.lr": "0.0005"}


@pytest.mark.slow
def test_a_trial_whose_sweeper_on_another_machine_went_silent_is_run_again(cli):
    from cifar import study as studies

    cli("hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", multirun=True)
    storage = studies.open_storage(f"sqlite:///{cli.tmp_path / 'optuna.db'}")
    study = load_study(cli)
    elsewhere = "another-host:123:1700000000.00"
    silent = running_trial(study, storage, elsewhere, heartbeat=True)
    beating = running_trial(study, storage, elsewhere, heartbeat=True)  # still running there
    backdate_heartbeat(cli.tmp_path / "optuna.db", silent, studies.SILENT_AFTER_S + 60)
    parent, _ = sweep_runs(cli)
    client = client_for(cli)
    silent_run = client.create_run(parent.info.experiment_id, tags={  # as the dead worker's job had logged it
        "mlflow.parentRunId": parent.info.run_id, "optuna.trial_number": str(silent)}).info.run_id

    proc = cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.epochs=1", multirun=True)
    output = proc.stderr + proc.stdout
    assert (f"Trials [{silent}] of study {cli.experiment}-optuna were left running by a sweep that died (killed, or "
            f"silent for {studies.SILENT_AFTER_S} s): marked failed (killed), to be run again") in output
    assert (f"Study {cli.experiment}-optuna has 1 finished trial and 1 running in other workers: running 1 more"
            in proc.stdout)
    trials = load_study(cli).trials
    assert trials[silent].state == optuna.trial.TrialState.FAIL and trials[silent].user_attrs["killed"]
    assert trials[beating].state == optuna.trial.TrialState.RUNNING
    assert [t.number for t in trials if t.state == COMPLETE] == [0, 3]
    assert client.get_run(silent_run).info.status == "KILLED"
    with contextlib.closing(sqlite3.connect(cli.tmp_path / "optuna.db")) as db:  # the sweeps' trials had a heartbeat
        assert {n for (n,) in db.execute("SELECT number FROM trials JOIN trial_heartbeats USING (trial_id)")} == {
            0, silent, beating, 3}


@pytest.mark.slow
def test_a_study_resumed_in_another_experiment_gets_a_parent_run_there(cli):
    shared = "hydra.sweeper.study_name=shared"  # by default each experiment has a study of its own
    cli("hparams_search=optuna", shared, "hydra.sweeper.n_trials=1", "trainer.epochs=1", multirun=True)
    first_parent, _ = sweep_runs(cli)
    other = f"{cli.experiment}-other"
    cli("hparams_search=optuna", shared, "hydra.sweeper.n_trials=2", "trainer.epochs=1", f"mlflow.experiment={other}",
        multirun=True)
    client = client_for(cli)
    parent, children = sweep_parent_and_children(
        client.search_runs([client.get_experiment_by_name(other).experiment_id]))
    assert parent.info.run_id != first_parent.info.run_id and parent.info.status == "FINISHED"
    assert [c.data.tags["optuna.trial_number"] for c in children] == ["1"]  # trial 0 ran in the first sweep
    assert load_study(cli, "shared").user_attrs["mlflow_parent_run_id"] == parent.info.run_id  # the next resume's
    assert client.get_run(first_parent.info.run_id).info.status == "FINISHED"  # left as it was


@pytest.mark.slow
def test_a_search_logged_to_another_experiment_is_a_study_of_its_own(cli):
    cli("hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", multirun=True)
    other = f"{cli.experiment}-other"
    proc = cli("hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", f"mlflow.experiment={other}",
               multirun=True)
    assert "has 1 finished trial" not in proc.stderr + proc.stdout  # not the first search's study, which is full
    assert len(load_study(cli).trials) == 1 and len(load_study(cli, f"{other}-optuna").trials) == 1


@pytest.mark.slow
def test_a_joblib_sweep_and_its_workers_leave_their_objects_out_of_the_collections_at_exit(cli, tmp_path):
    """The workers' collections at exit, over the objects that torch and MLflow made, held a sweep's end: its last
    line was 2.4 s from its exit, 0.6 s without them. Each Python process of the sweep gets an exit handler that
    runs after its own (from a sitecustomize), which says how many objects it left out."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""\
        import atexit, gc, os, sys

        def left_out():
            main = getattr(sys.modules["__main__"].__spec__, "name", "-")  # cifar.train, loky's worker, ...
            line = f"process {main} {'cifar.task' in sys.modules} {gc.get_freeze_count()}\\n"
            os.write(2, line.encode())  # one write: the workers' lines, which end at once, are not interleaved

        atexit.register(left_out)
        """))
    args, env = cli.command("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", "mlflow.log_model=false",
                            multirun=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    proc = subprocess.run(args, cwd=cli.tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    processes = re.findall(r"^process (\S+) (True|False) (\d+)$", proc.stderr, re.MULTILINE)
    sweep = [int(count) for main, _, count in processes if main == "cifar.train"]
    workers = [int(count) for main, ran_a_job, count in processes if main != "cifar.train" and ran_a_job == "True"]
    assert len(sweep) == 1 and len(workers) == 2, proc.stderr
    assert min(sweep + workers) > 1000, proc.stderr


@pytest.mark.slow
def test_two_joblib_workers_run_eight_trials_without_losing_any(cli):
    proc = cli(
        "hparams_search=optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=8", "hydra/sweeper/pruner=none", "trainer.epochs=1", multirun=True,
    )
    # a worker gets the config store from the sweep's process, then registers the schemas again: silently
    assert "Hydra15MigrationWarning" not in proc.stderr
    study = load_study(cli)
    assert [t.state for t in study.trials] == [COMPLETE] * 8
    parent, children = sweep_runs(cli)
    assert sorted(children) == list(range(8))
    assert {c.info.status for c in children.values()} == {"FINISHED"}
    assert parent.data.metrics["sweep/jobs_finished"] == 8
    # each worker took its half of the cores
    assert {c.data.tags["torch.threads"] for c in children.values()} == {str(max(1, cpu_cores() // 2))}


@pytest.mark.parametrize(
    ("launcher", "sweeper", "cores", "expected"),
    [
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, {}, 8, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, {}, 8, 8),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, {}, 8, 7),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1},
         {"n_jobs": 2}, 8, 2),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4},
         {"max_batch_size": None}, 8, 4),
        # submitit_local: a process for each job of a batch, a grid's whole sweep where no batch size is set
        ({"_target_": LOCAL_SUBMITIT_LAUNCHER}, {"max_batch_size": None}, 8, 6),
        ({"_target_": LOCAL_SUBMITIT_LAUNCHER}, {"max_batch_size": 2}, 8, 2),
        ({"_target_": LOCAL_SUBMITIT_LAUNCHER}, {"n_jobs": 3}, 8, 3),
    ],
)
def test_concurrent_jobs_counts_the_workers_that_share_the_machine(launcher, sweeper, cores, expected):
    hydra_cfg = OmegaConf.create({"launcher": launcher, "sweeper": sweeper})
    assert concurrent_jobs(hydra_cfg, cores, sweep_jobs=6) == expected


JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")
KILLED_SWEEPS = {  # launcher overrides, the signal, and whether it goes to a job's worker process or to the sweep
    "basic, SIGKILL": ((), signal.SIGKILL, False),
    "joblib, SIGTERM": (JOBLIB, signal.SIGTERM, False),
    "joblib with live bars, SIGTERM": ((*JOBLIB, "trainer.progress=true"), signal.SIGTERM, False),
    "joblib, a worker SIGKILLed": (JOBLIB, signal.SIGKILL, True),  # as where memory runs out; joblib stops the rest
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher,signum,to_worker", KILLED_SWEEPS.values(), ids=KILLED_SWEEPS)
def test_a_killed_sweep_finishes_its_study_when_the_same_command_runs_again(cli, launcher, signum, to_worker):
    overrides = ("hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=none",
                 "trainer.epochs=15", *launcher)
    proc = start(cli, *overrides, multirun=True)
    wait_until(proc, lambda: _killable(cli), interval=0.2)
    if to_worker:
        signal_process_of(_killable(cli), signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    stopped = {signal.SIGTERM: "interrupted by SIGTERM", signal.SIGKILL: "error: a worker process of the launcher was "
               "killed (exit codes {SIGKILL(-9)}), as the system kills one where it runs out of memory (fewer jobs at "
               "once need less: hydra.launcher.n_jobs)"}[signum]
    assert proc.returncode == (1 if to_worker else 128 + signum if signum == signal.SIGTERM else -signum), stderr
    if proc.returncode > 0:
        assert "Traceback" not in stderr and CALLBACK_FAILED.search(stderr) is None
        # the last line: nothing after it, where the resource tracker warned of the workers' "leaked semaphore objects"
        assert stderr.endswith(f"cifar.train: {stopped}: finished trials are kept; the same command finishes the "
                               f"study: {shlex.join(['python', *proc.args[1:]])}\n"), stderr
        # the trials it ran are failed (killed) as it stops, not left RUNNING until the next sweep of the study
        assert optuna.trial.TrialState.RUNNING not in {t.state for t in load_study(cli).trials}
    before = {t.number: (t.params, t.datetime_complete) for t in load_study(cli).trials if t.state == COMPLETE}

    cli(*overrides, multirun=True)  # the same command again
    trials = load_study(cli).trials
    killed = [t for t in trials if t.user_attrs.get("killed")]
    assert killed and all(t.state == optuna.trial.TrialState.FAIL for t in killed)
    assert [t.state for t in trials if t not in killed] == [COMPLETE] * 4  # n_trials, killed ones not counted
    assert {n: (trials[n].params, trials[n].datetime_complete) for n in before} == before  # not re-run
    assert "RUNNING" not in {r.info.status for r in all_runs(cli)}
    parent, children = sweep_runs(cli)  # the study's parent, taken up again; one run per trial
    assert parent.info.status == "FINISHED"
    assert {t.number for t in trials if t not in killed} <= set(children)
    # the trial that was training when the sweep was stopped (seen RUNNING by _killable); under joblib, a
    # job that had just finished before the sweeper recorded its trial is killed in the study but FINISHED
    assert "KILLED" in {children[t.number].info.status for t in killed if t.number in children}


def _killable(cli):
    """The run of a trial that started after another finished, and is training (read from MLflow: the study may not
    exist yet); None where there is none yet. That one has its epochs ahead of it, unlike the finished one's partner
    in a joblib batch, which started with it and may finish before the signal lands."""
    jobs = [r for r in all_runs(cli) if "mlflow.parentRunId" in r.data.tags]
    finished = [job.info.end_time for job in jobs if job.info.status == "FINISHED"]
    started_after = [job for job in jobs if finished and job.info.status == "RUNNING"
                     and job.info.start_time > max(finished)]
    return started_after[0] if started_after else None


@pytest.mark.parametrize("completed, importances", [(1, False), (4, True)])
def test_parameter_importances_are_plotted_only_from_enough_trials(completed, importances, recwarn):
    from cifar import plots

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-2) + trial.suggest_int("width", 1, 4),
                   n_trials=completed)
    figures = plots.study_figures(study)
    assert ("param_importances.png" in figures) == importances and "optimization_history.png" in figures
    assert not [w for w in recwarn if "importances will be equal" in str(w.message)]  # said by the missing plot
    for figure in figures.values():
        plots.close(figure)
