"""Jobs that share this machine: each takes its share of the CPU cores for torch's threads, and its own GPU."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from cifar.errors import ConfigError

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _uses_joblib(hydra_cfg: DictConfig) -> bool:
    return OmegaConf.select(hydra_cfg, "launcher._target_") == JOBLIB_LAUNCHER


def check_launcher(hydra_cfg: DictConfig) -> None:
    """Refuse the joblib launcher's ``n_jobs=0``, which joblib would refuse only once the jobs are
    launched, with a traceback."""
    if _uses_joblib(hydra_cfg) and hydra_cfg.launcher.n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs=0 is out of range: it must be >= 1 (workers), or negative as in "
                          "joblib (-1: all cores, -2: all but one, ...)")


def concurrent_jobs(hydra_cfg: DictConfig, cores: int) -> int:
    """How many jobs run at once here: the joblib launcher's workers, capped by the sweeper's batch."""
    if not _uses_joblib(hydra_cfg):
        return 1  # the basic launcher runs jobs one after the other; others run them elsewhere
    workers = hydra_cfg.launcher.n_jobs
    if workers < 0:  # joblib's convention: -1 all cores, -2 all but one, ...
        workers = cores + 1 + workers
    batch = OmegaConf.select(hydra_cfg, "sweeper.n_jobs") or OmegaConf.select(hydra_cfg, "sweeper.max_batch_size")
    return max(1, min(workers, batch) if batch else workers)


def threads_per_job(hydra_cfg: DictConfig) -> int | None:
    """Torch threads for a job whose ``trainer.threads`` is unset: None (torch's default, all cores)
    when it runs alone, else the cores divided among the jobs running at once (at least 1)."""
    cores = cpu_cores()
    jobs = concurrent_jobs(hydra_cfg, cores)
    return None if jobs == 1 else max(1, cores // jobs)


def job_slot(hydra_cfg: DictConfig) -> int:
    """This job's place among the jobs that run at once here (0 when it runs alone): the GPU it takes."""
    num = OmegaConf.select(hydra_cfg, "job.num", default=0)
    return num % concurrent_jobs(hydra_cfg, cpu_cores())
