"""``python -m cifar.train``: the Hydra app that trains one classifier per job.

This module stays light (no torch or MLflow import) so that ``--help`` and config errors
answer at once; the task itself is in :mod:`cifar.task`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from cifar import hydra_plugin
from cifar.collector import import_for_good, skip_collection_at_exit
from cifar.config import CONF_DIR, FIX_THE_VALUE, LISTS_THE_KEYS, key_elsewhere, validate
from cifar.continuation import how_to_continue, train_command
from cifar.credentials import without_passwords
from cifar.errors import (
    AbortRun, DivergedError, JobConfigError, UserError, unparsed_override, unwritable_output_dir,
)
from cifar.launchers import lost_job, submitit_launchers
from cifar.outages import StoreOutage, store_outage
from cifar.ray_launcher import RayLauncher
from cifar.tracking import USER_TAG_KEYS

# Registered by the package's entry point once installed; here too for a plain source checkout.
for sweeper in (hydra_plugin.CheckedBasicSweeper, hydra_plugin.PruningOptunaSweeper):
    Plugins.instance().register(sweeper)
for launcher in (RayLauncher, *submitit_launchers()):  # the presets hydra/launcher=ray's and submitit_*'s
    Plugins.instance().register(launcher)

# Targets that configs may instantiate: our callbacks, Hydra's logging handlers, Optuna's
# samplers and pruners. Hydra 1.4 refuses anything else.
EXECUTION_WHITELIST = ["cifar.*", "logging.*", "optuna.*"]
EX_TEMPFAIL = 75  # sysexits.h: a failure that may go away; run the command again later
# Errors in the user's input: reported as one line by describe(), here and by the tools that compose the config
USER_ERRORS = (UserError, HydraException, OmegaConfBaseException)


# By its absolute path: "../conf", relative to this module, Hydra took for the package "conf" where main() is
# called from another module (as by the cifar-train command), and found no config.
@hydra.main(config_path=str(CONF_DIR), config_name="config", execution_whitelist=EXECUTION_WHITELIST)
def train(cfg: DictConfig) -> float | None:
    skip_collection_at_exit()  # also where this runs in a launcher's worker (joblib's: 2 s of a sweep's end)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a sweep's job, tagged as its dir is named: by its number (a trial's)
        job_dir = str(hydra_cfg.sweep.subdir)
        tag_console_lines(f"[#{job_dir if job_dir.isdigit() else hydra_cfg.job.num}]")
    try:
        validate(cfg)  # checked before (config.RunConfigCheck, cifar.sweeper) but in the DVC stage and other sweepers
        # Heavy imports (torch, MLflow) only once the config is valid; torch._dynamo: the first optimizer's
        import_for_good("cifar.task", "torch._dynamo")
        from cifar.task import run

        return run(cfg)
    except UserError as err:
        if HydraConfig.get().mode == RunMode.RUN:
            raise AbortRun(err) from err
        raise  # in a sweep Hydra names the failed job's overrides first


class _Tagged(logging.Formatter):
    """A formatter that formats a record as ``inner`` does, then puts a tag before it: ``[#1][2026-...]`` where the
    text starts with a bracket, as Hydra's does, and ``[#1] epoch 1/5 ...`` otherwise."""

    def __init__(self, inner: logging.Formatter, tag: str):
        super().__init__()
        self.inner, self.tag = inner, tag

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        return f"{self.tag}{'' if text.startswith('[') else ' '}{text}"


def tag_console_lines(tag: str) -> None:
    """Start each line that this job logs to the console with ``tag``, which names the job: the jobs that a launcher
    runs at once write their lines to one console. Its log file stays as it is."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setFormatter(_Tagged(handler.formatter or logging.Formatter(), tag))


def main() -> None:
    """Run the Hydra app; report a user error as one line on stderr and exit with status 2.

    Hydra re-raises errors only when HYDRA_FULL_ERROR is set, so it is set here; a user who
    set it themselves gets the full traceback instead of the one line. SIGTERM is handled as
    Ctrl-C: the MLflow run ends KILLED, the last epoch's checkpoint stays, and the exit status
    is 128 + the signal's number. An MLflow store that stopped answering for ``mlflow.store_wait_s``
    stops the run (or sweep) the same way, with exit status 75 (EX_TEMPFAIL), and a launcher that lost a
    job's process stops a sweep so, with exit status 1.
    """
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    skip_collection_at_exit()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        train()
    except (AbortRun, *USER_ERRORS) as err:
        if full_error:
            raise
        print(f"cifar.train: error: {describe(err)}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # Hydra creating the output dir: not a directory, no permission, disk full
        if full_error or err.filename is None:
            raise
        print(f"cifar.train: error: {unwritable_output_dir(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        # Ray's wait for its jobs raises a KeyboardInterrupt of its own, without the signal's number
        number = interrupt.args[0] if interrupt.args else signal.SIGTERM if _sigterm_taken else signal.SIGINT
        print(f"cifar.train: interrupted by {signal.Signals(number).name}: {how_to_continue(sys.argv[1:])}",
              file=sys.stderr)
        sys.exit(128 + number)
    except (StoreOutage, Exception) as err:  # some need no traceback (_known_failure)
        if full_error or (known := _known_failure(err)) is None:
            raise
        line, status = known
        print(f"cifar.train: error: {line}", file=sys.stderr)
        sys.exit(status)


def _known_failure(err: Exception) -> tuple[str, int] | None:
    """The line and exit status that report ``err``, where it needs no traceback: Hydra's refusal of flags that do
    not go together, the store's outage, a job's process that the launcher lost; None for any other error."""
    if _flags_refused_by_hydra(err):
        return f"{err}: python -m cifar.train --help lists the flags", 2
    if (outage := store_outage(err)) is not None:  # first: submitit reports a job that an outage stopped as lost
        return f"{outage}: {how_to_continue(sys.argv[1:])}", EX_TEMPFAIL
    if (lost := lost_job(err)) is not None:
        return f"{lost}: {how_to_continue(sys.argv[1:])}", 1
    return None


def _flags_refused_by_hydra(err: Exception) -> bool:
    """Whether ``err`` is Hydra's refusal of command-line flags that do not go together (``-m`` with ``--cfg``,
    ``--resolve`` without ``--cfg``), a ValueError with a traceback."""
    frames = traceback.extract_tb(err.__traceback__)
    return isinstance(err, ValueError) and bool(frames) and frames[-1].name == "_run_hydra"


_sigterm_taken = False  # whether a SIGTERM was taken


def _interrupt(number: int, frame: object) -> None:
    """SIGTERM's handler: stop as Ctrl-C does."""
    global _sigterm_taken
    _sigterm_taken = True
    raise KeyboardInterrupt(number)


def describe(err: BaseException, sweeps: bool = True) -> str:
    """One line naming the problem, from Hydra's and OmegaConf's multi-line messages; ``sweeps``: whether the command
    that composed the config can sweep (``cifar.train``), not a tool that takes one config (``cifar.env``)."""
    if isinstance(err, AbortRun):
        err = err.__cause__
    if isinstance(err, DivergedError):
        return f"training diverged: {err}. Lower optimizer.lr or add a scheduler warm-up"
    if isinstance(err, JobConfigError) and err.__cause__ is not None:
        return f"{err.job}: {describe(err.__cause__)}"
    if isinstance(err, OverrideParseException):
        return unparsed_override(err)
    if isinstance(err, ConfigCompositionException) and (swept := _HYDRA_KEY_SWEPT.match(str(err))):
        return _hydra_key_swept(*swept.groups())
    if isinstance(err, ConfigCompositionException) and (swept := _SWEEP_WITHOUT_M.match(str(err))):
        return _sweep_without_m(*swept.groups(), sweeps)
    if isinstance(err, ConfigCompositionException) and (added := _GROUP_ADDED_AGAIN.match(str(err))):
        group, choice = added.groups()
        return (f"+{group}={choice}: {group} is in the config's defaults already, so it takes no +: "
                f"give {group}={choice}")
    config_error, config_file = _config_error(err)
    if isinstance(config_error, OmegaConfBaseException) and config_error.msg:
        key = f" (key: {config_error.full_key})" if config_error.full_key else ""
        where = f"In '{config_file}': " if config_file else ""
        return f"{where}{config_error.msg.strip().splitlines()[0]}{key}{_config_fix(config_error, config_file)}"
    if isinstance(err, MissingConfigException) and err.options:
        return f"{str(err).strip().splitlines()[0]}. Available options: {', '.join(err.options)}"
    return " ".join(str(err).split())


def _config_error(err: BaseException) -> tuple[BaseException | None, str | None]:
    """The OmegaConf error behind ``err``, and the config file it is in where Hydra merging that file raised it
    (as when a preset sets a key of another option of a config group than the one chosen)."""
    if isinstance(err, OmegaConfBaseException):
        return err, None
    if isinstance(err, ConfigCompositionException) and (merged := _MERGING_FILE.match(str(err))):
        return err.__context__, merged.group(1)
    return err.__cause__, None


_MERGING_FILE = re.compile(r"In '([^']+)': \w+ raised while composing config")  # Hydra's words, hydra/_internal


_HYDRA_KEY_SWEPT = re.compile(r"Sweeping over Hydra's configuration is not supported : '([^=]+)=(.*)'$")  # Hydra's
SWEEPER_PARAMS = "hydra.sweeper.params."
# Hydra's words for values to sweep over (a,b or range(), choice(), ...) given without -m
_SWEEP_WITHOUT_M = re.compile(r"(Ambiguous value for argument|Sweep parameters) '(.*?)'(?:\n| requires --multirun$)")
# Hydra's words for a config group added (+group=option) on the command line where the defaults list has it
_GROUP_ADDED_AGAIN = re.compile(
    r"Multiple values for (\S+)\.[^\n]*\nConflicting choices: .*'([^']*)' from 'command line'")


def _hydra_key_swept(key: str, values: str) -> str:
    """The line for Hydra's refusal to sweep a ``hydra.*`` key. A search range given as
    ``hydra.sweeper.params.KEY=RANGE`` is one: the Optuna sweeper searches ``KEY=RANGE`` given as such."""
    line = f"{key}={values}: Hydra's own settings take one value, not a sweep"
    if (searched := key.removeprefix(SWEEPER_PARAMS)) != key:
        return f"{line}: give the search range as {searched}='{values}', which replaces the preset's"
    return f"{line}: give {key} one value, and run a command for each"


def _sweep_without_m(hydras_words: str, override: str, sweeps: bool) -> str:
    """The line for values to sweep over given without ``-m``, with the command that sweeps them (where it is
    ``cifar.train``: ``sweeps``; a tool takes one value); a comma-separated list of them may be meant as a string,
    or as a list, which Hydra writes otherwise."""
    if sweeps:
        command = without_passwords(train_command(["-m", *sys.argv[1:]]))
        line = f"{override} gives several values, which run only as a sweep: add -m ({command})"
    else:
        line = f"{override} gives several values, where this command takes one: give one"
    if hydras_words.startswith("Ambiguous"):  # a,b
        return f"{line}; one value that holds commas is quoted, as 'key=\"a,b\"', and a list is written key=[a,b]"
    return line


# The plugins whose settings are under hydra.launcher and hydra.sweeper, and how to choose one that has a key
_PLUGIN_CHOICES = {"launcher": "hydra/launcher=joblib, ...: `--hydra-help` lists them",
                   "sweeper": "hparams_search=optuna or hydra/sweeper=optuna"}


def _hydra_key_fix(key: str) -> str:
    """The fix for an unknown ``hydra.*`` key: Hydra's own keys are listed by ``--cfg hydra``, not ``--cfg job``;
    the launcher's and the sweeper's are those of the plugin chosen (the basic launcher has no ``n_jobs``)."""
    plugin = key.split(".")[1]
    if plugin in _PLUGIN_CHOICES:
        return (f": the {plugin} chosen has no such key: fix it, choose a {plugin} that has it "
                f"({_PLUGIN_CHOICES[plugin]}) or drop it; `--cfg hydra` lists the keys of the {plugin} chosen")
    return ": fix or drop it; `--cfg hydra` lists Hydra's keys"


def _config_fix(err: OmegaConfBaseException, config_file: str | None) -> str:
    """The fix, which OmegaConf's messages leave out, for an unknown key or a value of the wrong type."""
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)):
        if config_file is None and (err.full_key or "").startswith(USER_TAG_KEYS):  # a new tag
            return f": a tag of your own takes a +, as in +{err.full_key}=VALUE"
        if config_file is None and (err.full_key or "").startswith("hydra."):
            return _hydra_key_fix(err.full_key)
        if config_file is None:  # an override's
            return f": {key_elsewhere(err.full_key or '')}fix or drop it; {LISTS_THE_KEYS}"
        group, _, key_in_group = (err.full_key or "").partition(".")
        if not key_in_group:
            return f": fix {config_file}"
        return (f": the {group} chosen has no such key: choose the {group} that {config_file} is written for, "
                f"or fix {config_file}")
    if isinstance(err, ValidationError):
        return f". {FIX_THE_VALUE}"
    return ""


if __name__ == "__main__":
    main()
