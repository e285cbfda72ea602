"""``hydra/launcher=ray``: Hydra's Ray launcher, with the sweep's SIGTERM handler, directory and store kept.

``ray.init`` replaces the sweep process's SIGTERM handler with Ray's (``sys.exit``, then an abort in
Ray's core worker): a SIGTERM would end the sweep with exit status 134 and leave its runs as they
were, instead of stopping it as Ctrl-C does. And where the sweep runs under ``uv run``, Ray's uv
integration runs each job with ``uv run`` in a new environment, built from pyproject.toml without the
extras (so without ray), instead of the one the cluster was started with. So this launcher joins the
cluster itself and puts the handler back, turns that integration off unless
``RAY_ENABLE_UV_RUN_RUNTIME_ENV`` is set, and says in one line where Ray finds no cluster to join, one
that asks for a token, one that runs another version of Ray or Python, or one whose workers cannot load
the jobs.

Ray's jobs run in the directory and environment of their machine's ``ray start``, not the sweep's: a
relative path (``hydra.sweep.dir``, a SQLite store, the defaults included) led each job elsewhere, its
output dir and runs apart from the sweep's parent run. So the jobs start in the sweep's directory
and have its ``MLFLOW_TRACKING_URI``.

Ray runs a task again (``max_retries``, 3 by default) where the process that ran it is lost: killed by
Ray's memory monitor or by hand, or on a node that left the cluster. The job trained again from epoch 1
in a new MLflow run, its first left RUNNING. Here it continues from its job dir's ``last.pt`` in the
same run, as a requeued submitit job does (:mod:`cifar.submitit_launcher`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import signal
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cifar import owner
from cifar.continuation import RESUME
from cifar.errors import UserError, first_line
from cifar.files import atomic_write_text
from cifar.launchers import RAY_SETUP_HOOK, ray_address_given
from cifar.tracking import STORE_VAR

UV_INTEGRATION_VAR = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"  # read by Ray when it is first imported
RAY_VERSION_MISMATCH = "Version mismatch"  # how ray.init's error begins where the cluster runs another Ray or Python
MISSING_MODULE = re.compile(r"No module named '[^']+'")  # of a job that a worker could not unpickle
ATTEMPT_FILE = ".ray_attempt.json"  # in a job's dir: the Ray task that runs the job, and the process of its attempt

log = logging.getLogger(__name__)


class RayLauncher(Launcher):
    """Hydra's ``RayLauncher`` (``hydra-ray-launcher``, the ray extra), which does the work."""

    def __init__(self, ray: DictConfig) -> None:
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as HydraRayLauncher

        self.hydra_launcher = HydraRayLauncher(ray)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_launcher.setup(hydra_context=hydra_context, task_function=ResumedWhenRetried(task_function),
                                  config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        os.environ.setdefault(UV_INTEGRATION_VAR, "0")
        import ray

        if not ray.is_initialized():
            self._join_cluster(ray)  # then Hydra's launch finds Ray started
        try:
            return self.hydra_launcher.launch(job_overrides, initial_job_idx)
        except ray.exceptions.RayTaskError as err:
            if not (missing := MISSING_MODULE.search(str(err))):
                raise
            ray.shutdown()  # else Ray prints the other jobs' same error, and the workers' tracebacks, after this one
            raise UserError(f"hydra/launcher=ray: a worker of the Ray cluster could not load a job ({missing[0]}): "
                            "its machine's ray start ran in an environment without this project; start the cluster "
                            "with uv run ray start ... from this project on each machine") from err

    def _join_cluster(self, ray: ModuleType) -> None:
        """``ray.init`` with the launcher's ``init`` config, this process's SIGTERM handler kept, and the jobs
        started in its working directory with its ``MLFLOW_TRACKING_URI``."""
        init = OmegaConf.to_container(self.hydra_launcher.ray_cfg.init, resolve=True)
        runtime_env = init.setdefault("runtime_env", {})
        # the user's hook (checked by launchers.check_cluster before the sweep started) runs after the launcher's
        runtime_env[RAY_SETUP_HOOK] = sweep_dir_hook(os.getcwd(), then=runtime_env.get(RAY_SETUP_HOOK))
        if store := os.environ.get(STORE_VAR):
            runtime_env.setdefault("env_vars", {}).setdefault(STORE_VAR, store)
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(**init)
        except ConnectionError as err:
            raise UserError(_not_joined(ray_address_given(init.get("address")), err)) from err
        except RuntimeError as err:
            if not str(err).startswith(RAY_VERSION_MISMATCH):
                raise
            versions = " ".join(str(err).split())  # Ray's message spans lines: the cluster's versions, then this one's
            raise UserError(f"hydra/launcher=ray cannot join the Ray cluster: {versions}: run the sweep with the Ray "
                            "and Python that the cluster was started with (uv run ray start ... from this project "
                            "starts it with this project's)") from err
        finally:
            signal.signal(signal.SIGTERM, sigterm_handler)


def _not_joined(given: tuple[str, str] | None, err: ConnectionError) -> str:
    """What to do where ``ray.init`` joined no cluster at the address ``given`` (:func:`ray_address_given`). Where
    the cluster's head answers there (the sweep checked that it does before it started), it may ask for a token that
    this process does not send: ``ray start`` turns token authentication on where it finds one
    (``~/.ray/auth_token``), and Ray sends it to an address given only with ``RAY_AUTH_MODE=token``, which Ray's
    error does not say."""
    if given is None:  # Ray looked for the cluster itself
        return (f"hydra/launcher=ray found no Ray cluster to join ({first_line(err)}): start one (ray start --head), "
                "or set hydra.launcher.ray.init.address to its head's")
    _, address = given
    return (f"hydra/launcher=ray could not join the Ray cluster at {address} ({first_line(err)}): check that its "
            "head runs there, and where it asks for a token (ray start does where it finds ~/.ray/auth_token), set "
            "RAY_AUTH_MODE=token here, with the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN")


class ResumedWhenRetried:
    """The task function of the jobs, run with ``trainer.resume=true`` where Ray runs the job's task again."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        import ray

        job_dir = Path(HydraConfig.get().runtime.output_dir)
        if (lost := lost_attempt(job_dir, ray.get_runtime_context().get_task_id())) is not None:
            log.warning("Ray runs this job again, its process %s lost: it continues from its last epoch", lost)
            owner.declare_gone(lost)  # its MLflow run, left RUNNING where it was killed, is taken up
            OmegaConf.update(cfg, RESUME, True)
        return self.task_function(cfg)


def lost_attempt(job_dir: Path, task_id: str) -> str | None:
    """The process (:func:`cifar.owner.current`) of the attempt before this one of Ray task ``task_id`` in
    ``job_dir`` (Ray gives each attempt the task's id), or None where this is the task's first; records this
    attempt's."""
    path = job_dir / ATTEMPT_FILE
    before = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_text(path, json.dumps({"task_id": task_id, "owner": owner.current()}))
    return before["owner"] if before.get("task_id") == task_id else None


def sweep_dir_hook(sweep_cwd: str, then: str | None = None) -> Callable[[], None]:
    """Ray's setup hook of each worker process that runs jobs: work in the sweep's directory, where the worker's
    machine has it (a shared filesystem), as a job of a local launcher does; then run the user's own hook, ``then``
    (``runtime_env.worker_process_setup_hook`` in the launcher's ``init``: a function's ``module.name``), which
    Ray would run in its place. A function of its own (Ray pickles it whole), so that a worker whose environment
    lacks this project still gets to the job, which says what it lacks."""

    def enter_sweep_dir() -> None:
        if os.path.isdir(sweep_cwd):
            os.chdir(sweep_cwd)
        else:
            logging.getLogger(__name__).warning(
                "The sweep's directory %s is not on this machine: this job's relative paths are taken from %s",
                sweep_cwd, os.getcwd())
        if then is not None:
            module, name = then.rsplit(".", 1)  # as Ray loads a hook given by name
            getattr(importlib.import_module(module), name)()

    return enter_sweep_dir
