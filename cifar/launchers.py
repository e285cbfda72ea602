"""Cluster launcher presets: Hydra's own launcher plugins, with this project's defaults.

``hydra/launcher=submitit_slurm`` and ``hydra/launcher=ray`` keep the plugins' config schemas
(every key of theirs can be overridden) and take defaults for training: one GPU per trial.
``hydra/launcher=submitit_local`` keeps the plugin's defaults. The launchers are the plugins', whose
jobs resume when submitit requeues them (:mod:`cifar.submitit_launcher`) and whose Ray sweep keeps its
SIGTERM handler (:mod:`cifar.ray_launcher`). Registered over the plugins' configs when the plugins are
installed (``uv sync --extra submitit``, ``--extra ray``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import urllib.parse
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cifar.errors import ConfigError, first_line
from cifar.parallel import JOBLIB_LAUNCHER, LOCAL_SUBMITIT_LAUNCHER
from cifar.stores import is_loopback, is_sqlite, loopback_host, no_answer

log = logging.getLogger(__name__)

# Each SLURM job trains one trial: one GPU, and CPU cores and memory for its data on the GPU.
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 120}
RAY_GPUS_RESOLVER = "cifar_ray_gpus_per_trial"
SLURM_LAUNCHER = "cifar.submitit_launcher.SlurmLauncher"  # Hydra's, whose requeued jobs resume
RAY_LAUNCHER = "cifar.ray_launcher.RayLauncher"  # Hydra's, keeping the sweep's SIGTERM handler, directory, store
RAY_AWS_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher"
RAY_THIS_MACHINE = ("auto", "local")  # Ray's addresses for a cluster started here, or a new local one
RAY_SETUP_HOOK = "worker_process_setup_hook"  # in the Ray launcher's init.runtime_env: module.function
SUBMITIT_JOB_TAG = "submitit.job_id"  # on the run of a job of a submitit launcher
WORKERS_EXIT_CODES = re.compile(r"The exit codes of the workers are (\{.*?\})")  # in joblib's TerminatedWorkerError
SUBMITIT_NO_RESULT = re.compile(  # submitit's UncompletedJobError where a job left no result
    r"Job (\S+) \(task: \d+\) with path (\S+)\s+has not produced any output \(state: ([^)]*)\)")


def ray_gpus_per_trial() -> int:
    """One GPU per trial on a Ray cluster that has GPUs, none on one that has not (where asking
    for one would leave the trials waiting forever). Resolved after the launcher joined the cluster."""
    import ray

    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0


def submitit_launchers() -> tuple[type, ...]:
    """The launchers of the presets ``hydra/launcher=submitit_*`` (:mod:`cifar.submitit_launcher`), to register
    as Hydra plugins; none where the submitit extra is not installed."""
    try:
        from cifar.submitit_launcher import LocalLauncher, SlurmLauncher
    except ImportError:
        return ()
    return LocalLauncher, SlurmLauncher


def lost_job(err: BaseException | None) -> str | None:
    """What stopped a sweep whose launcher lost a job's process, killed (by the system where memory runs out, say)
    or crashed: a joblib worker (joblib then stops the other workers, their jobs with them, as an interrupt does),
    or a submitit job that ended without a result (SLURM's out-of-memory kill, a cancel), or a Ray job lost on its
    last try (Ray runs it again ``max_retries`` times first); None where ``err`` is anything else (a job's own error
    included)."""
    if isinstance(err, BrokenProcessPool):
        return _lost_worker(err)
    if _submitit_job_without_result(err):
        return _lost_submitit_job(err)
    ray = sys.modules.get("ray.exceptions")  # imported where the Ray launcher ran
    if ray and isinstance(err, (ray.WorkerCrashedError, ray.NodeDiedError, ray.OutOfMemoryError)):
        return (f"Ray lost a job's process, and had tried it as often as it may ({first_line(err)}): "
                "+hydra.launcher.ray.remote.max_retries=N gives each job N more tries")
    return None


def _lost_worker(err: BrokenProcessPool) -> str:
    codes = WORKERS_EXIT_CODES.search(str(err))
    if codes and "SIGKILL" in codes[1]:
        return (f"a worker process of the launcher was killed (exit codes {codes[1]}), as the system kills one where "
                "it runs out of memory (fewer jobs at once need less: hydra.launcher.n_jobs)")
    return f"a worker process of the launcher ended abruptly ({f'exit codes {codes[1]}' if codes else first_line(err)})"


def _submitit_job_without_result(err: BaseException | None) -> bool:
    """Whether ``err`` is submitit's report of a job that ended without a result, not of a job's own error."""
    submitit = sys.modules.get("submitit.core.utils")  # imported where a submitit launcher ran
    return bool(submitit) and isinstance(err, submitit.UncompletedJobError) and not isinstance(
        err, submitit.FailedJobError)


def _lost_submitit_job(err: Exception) -> str:
    if not (found := SUBMITIT_NO_RESULT.match(str(err))):
        return f"a job of the launcher ended without a result ({first_line(err)})"
    job, result, state = found.groups()
    return (f"submitit job {job} ended without a result (state: {state}), as a job that is killed (out of memory, "
            f"say) or cancelled does; its logs are in {os.path.dirname(result)}")


def lost_submitit_job_id(err: BaseException | None) -> str | None:
    """The id of the submitit job that :func:`lost_job` says ended without a result, if ``err`` says so."""
    found = SUBMITIT_NO_RESULT.match(str(err)) if _submitit_job_without_result(err) else None
    return found[1] if found else None


def submitit_job_id() -> str | None:
    """The id of the submitit job that this process runs (SLURM's, or the local process's), if any: recorded on
    the job's MLflow run, so that the sweep ends the run of a job that submitit lost, on whatever machine."""
    if "submitit" not in sys.modules:  # imported by the process that runs a submitit job
        return None
    import submitit

    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not in a submitit job
        return None


def register_launcher_configs() -> None:
    store = ConfigStore.instance()
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    except ImportError:
        pass  # the submitit extra is not installed
    else:
        slurm = SlurmQueueConf(_target_=SLURM_LAUNCHER, **SLURM_DEFAULTS)
        store.store(group="hydra/launcher", name="submitit_slurm", node=slurm, provider="cifar", replace=True)
        local = LocalQueueConf(_target_=LOCAL_SUBMITIT_LAUNCHER)
        store.store(group="hydra/launcher", name="submitit_local", node=local, provider="cifar", replace=True)
    try:
        from hydra_plugins.hydra_ray_launcher._config import RayConf, RayLauncherConf
    except ImportError:
        pass  # the ray extra is not installed
    else:
        OmegaConf.register_resolver(RAY_GPUS_RESOLVER, ray_gpus_per_trial, replace=True)
        # address null: RAY_ADDRESS, else a cluster started on this machine (`ray start --head`), else a new one
        ray = RayConf(init={"address": None}, remote={"num_gpus": f"${{{RAY_GPUS_RESOLVER}:}}"})
        store.store(group="hydra/launcher", name="ray", node=RayLauncherConf(_target_=RAY_LAUNCHER, ray=ray),
                    provider="cifar", replace=True)


def runs_jobs_elsewhere(hydra_cfg: DictConfig) -> bool:
    """Whether the launcher runs the jobs on other machines than this one: SLURM's, Ray's on AWS, and Ray's
    on a cluster it joins at another machine's address (``hydra.launcher.ray.init.address`` or
    ``RAY_ADDRESS``). Ray's with no address may use other machines too (a head started here that others
    joined), which is not known before it joins."""
    target = OmegaConf.select(hydra_cfg, "launcher._target_")
    if target in (SLURM_LAUNCHER, RAY_AWS_LAUNCHER):
        return True
    head = _ray_head(hydra_cfg)
    return bool(head) and not is_loopback(head.host)


# The launchers that run each job on this machine, in the sweep's working directory
LAUNCHERS_HERE = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", JOBLIB_LAUNCHER, LOCAL_SUBMITIT_LAUNCHER)


def runs_jobs_here(hydra_cfg: DictConfig) -> bool:
    """Whether the launcher surely runs every job on this machine: the basic, joblib and submitit_local ones (Ray's
    may use other machines that joined its cluster)."""
    return OmegaConf.select(hydra_cfg, "launcher._target_") in LAUNCHERS_HERE


def check_cluster(hydra_cfg: DictConfig) -> None:
    """Refuse a cluster launcher whose cluster is not there, before the sweep starts: SLURM's where ``srun``
    is not on PATH (submitit's traceback otherwise), Ray's at an address where nothing answers (Ray's own
    wait otherwise: minutes of warnings); and Ray's with a setup hook that names no function, which each
    job would fail to run."""
    if OmegaConf.select(hydra_cfg, "launcher._target_") == SLURM_LAUNCHER and shutil.which("srun") is None:
        raise ConfigError(f"hydra/launcher={_launcher_name(hydra_cfg)} submits the jobs to SLURM, and its srun is not "
                          "on PATH here: run the sweep on the cluster's login node, or use "
                          "hydra/launcher=submitit_local to run the same jobs on this machine")
    head = _ray_head(hydra_cfg)
    if head and head.port is not None and (reason := no_answer(head.host, head.port)):
        raise ConfigError(f"{head.setting}={head.address}: no Ray cluster answers at {head.host}:{head.port} "
                          f"({reason}): start its head (ray start --head), or correct the address")
    if OmegaConf.select(hydra_cfg, "launcher._target_") == RAY_LAUNCHER:
        hook = OmegaConf.select(hydra_cfg, f"launcher.ray.init.runtime_env.{RAY_SETUP_HOOK}")
        if hook is not None and not (isinstance(hook, str) and "." in hook.strip(".")):
            raise ConfigError(f"hydra.launcher.ray.init.runtime_env.{RAY_SETUP_HOOK}={hook!r} is not a function's "
                              "name: give it as module.function (each job runs it after the launcher's)")


class RayHead(NamedTuple):
    setting: str  # hydra.launcher.ray.init.address, or RAY_ADDRESS
    address: str
    host: str
    port: int | None  # None where the address gives none


def _ray_head(hydra_cfg: DictConfig) -> RayHead | None:
    """The head of the Ray cluster that the Ray launcher joins; None for another launcher, and where Ray
    finds the cluster itself (no address, ``auto``, ``local``)."""
    if OmegaConf.select(hydra_cfg, "launcher._target_") != RAY_LAUNCHER:
        return None
    if not (given := ray_address_given(OmegaConf.select(hydra_cfg, "launcher.ray.init.address"))):
        return None
    setting, address = given
    parts = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:  # no number: left to Ray to report
        port = None
    return RayHead(setting, address, parts.hostname, port) if parts.hostname else None


def ray_address_given(init_address: str | None) -> tuple[str, str] | None:
    """The setting that gives the Ray launcher the address of its cluster's head, and that address:
    ``hydra.launcher.ray.init.address``, else ``RAY_ADDRESS``; None where Ray finds the cluster itself
    (no address, ``auto``, ``local``)."""
    if init_address:
        setting, address = "hydra.launcher.ray.init.address", init_address
    else:
        setting, address = "RAY_ADDRESS", os.environ.get("RAY_ADDRESS")
    return (setting, address) if address and address not in RAY_THIS_MACHINE else None


def _launcher_name(hydra_cfg: DictConfig) -> str:
    return OmegaConf.select(hydra_cfg, "runtime.choices.hydra/launcher") or "this launcher"


def check_stores_reach_jobs(hydra_cfg: DictConfig, stores: dict[str, str]) -> None:
    """Where the launcher runs the jobs on other machines: refuse a store (by what sets it: its URL) on this
    machine's loopback address, where each job would wait ``mlflow.store_wait_s`` for it in vain, and warn
    of a SQLite file, which the jobs share only through a network filesystem, where its locks fail."""
    if not runs_jobs_elsewhere(hydra_cfg):
        return
    launcher = _launcher_name(hydra_cfg)
    for setting, url in stores.items():
        if host := loopback_host(url):
            raise ConfigError(f"{setting}={url} is on this machine only ({host}), and hydra/launcher={launcher} "
                              "runs the jobs on other machines: use an address they reach (the server's host name)")
        if is_sqlite(url):
            log.warning("%s=%s is a SQLite file, and hydra/launcher=%s runs the jobs on other machines: they share "
                        "it only on a network filesystem, where SQLite's file locks are unreliable (NFS); use "
                        "PostgreSQL, or an mlflow server (README: Scaling out)", setting, url, launcher)
