"""Jobs that share this machine: each takes its share of the CPU cores for torch's threads, and its own GPU."""

from __future__ import annotations

import logging
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from cifar.errors import ConfigError

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL_SUBMITIT_LAUNCHER = "cifar.submitit_launcher.LocalLauncher"  # a process here for each job of a batch


def cpu_cores() -> int:
    """The CPU cores that this process may use: those of its affinity, capped by a CPU quota (a container's cgroup
    limit), which torch's own thread count does not see (``joblib.cpu_count``)."""
    import joblib

    return joblib.cpu_count()


def _uses_joblib(hydra_cfg: DictConfig) -> bool:
    return OmegaConf.select(hydra_cfg, "launcher._target_") == JOBLIB_LAUNCHER


def check_launcher(hydra_cfg: DictConfig) -> None:
    """Refuse the joblib launcher's ``n_jobs=0``, which joblib would refuse only once the jobs are
    launched, with a traceback."""
    if _uses_joblib(hydra_cfg) and hydra_cfg.launcher.n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs=0 is out of range: it must be >= 1 (workers), or negative as in "
                          "joblib (-1: all cores, -2: all but one, ...)")


def concurrent_jobs(hydra_cfg: DictConfig, cores: int, sweep_jobs: int | None = None) -> int:
    """How many jobs run at once here: the joblib launcher's workers, capped by the sweeper's batch; every job of a
    batch for the submitit_local launcher, which starts each as a process of its own (a sweep of ``sweep_jobs`` is
    one batch where its sweeper sets no size, as a grid's without ``hydra.sweeper.max_batch_size``)."""
    batch = OmegaConf.select(hydra_cfg, "sweeper.n_jobs") or OmegaConf.select(hydra_cfg, "sweeper.max_batch_size")
    if OmegaConf.select(hydra_cfg, "launcher._target_") == LOCAL_SUBMITIT_LAUNCHER:
        return max(1, batch or sweep_jobs or 1)
    if not _uses_joblib(hydra_cfg):
        return 1  # the basic launcher runs jobs one after the other; others run them elsewhere
    workers = hydra_cfg.launcher.n_jobs
    if workers < 0:  # joblib's convention: -1 all cores, -2 all but one, ...
        workers = cores + 1 + workers
    return max(1, min(workers, batch) if batch else workers)


def threads_per_job(hydra_cfg: DictConfig, torch_default: int, sweep_jobs: int | None = None) -> int:
    """Torch threads for a job whose ``trainer.threads`` is unset: where it runs alone, torch's default
    (OMP_NUM_THREADS, else the cores of the affinity) capped by :func:`cpu_cores`, else the cores divided among the
    jobs running at once (at least 1). Under a quota of 1 CPU on 2 cores, simplecnn's steps took 1.2x as long with 2
    threads (torch's default there) as with 1, and 16.7x with 8, its default on an 8-core host (``bench/threads.py``,
    medians of 3 runs)."""
    cores = cpu_cores()
    jobs = concurrent_jobs(hydra_cfg, cores, sweep_jobs)
    return min(torch_default, cores) if jobs == 1 else max(1, cores // jobs)


def check_threads(threads: int | None) -> None:
    """Refuse a ``trainer.threads`` above the CPU cores that this process may use, where each training step
    waits on threads that take turns on the cores: on 2 cores, simplecnn's steps took 5.0x as long with 4 threads
    as with 2, and 37.5x with 64 (``bench/threads.py``, medians of 3 runs)."""
    if threads is None:  # the job takes its share (threads_per_job)
        return
    cores = cpu_cores()
    if threads > cores:
        raise ConfigError(f"trainer.threads={threads} is more than the {_cpu_cores(cores)} that this process may use "
                          f"(threads that take turns on the cores slow each step: 5x for 4 threads on 2 cores): set "
                          f"trainer.threads to {cores} or less, or null (all of them)")


def _cpu_cores(count: int) -> str:
    return f"{count} CPU core{'s' * (count != 1)}"


def warn_shared_threads(configs: Sequence[DictConfig]) -> None:
    """Warn where the jobs that a sweep runs at once here take more threads between them (``trainer.threads``
    each) than this machine's cores: 2 joblib workers of 2 threads each on 2 cores trained simplecnn's
    epochs 1.6x to 7x slower than with 1 each, as ``trainer.threads=null`` shares the cores out. ``configs``: the
    sweep's jobs (a grid's, all of them)."""
    cores = cpu_cores()
    for config in configs:
        jobs, threads = concurrent_jobs(config.hydra, cores, len(configs)), config.trainer.threads
        if threads is not None and jobs * threads > cores:
            log.warning("trainer.threads=%d in each of the %d jobs that run at once takes %d threads on the %s here, "
                        "which slow each other's steps: set trainer.threads=%d, or null (the cores shared out between "
                        "the jobs)", threads, jobs, jobs * threads, _cpu_cores(cores), max(1, cores // jobs))
            return


def job_slot(hydra_cfg: DictConfig) -> int:
    """This job's place among the jobs that run at once here (0 when it runs alone): the GPU it takes."""
    num = OmegaConf.select(hydra_cfg, "job.num", default=0)
    return num % concurrent_jobs(hydra_cfg, cpu_cores())
