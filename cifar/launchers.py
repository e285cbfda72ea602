"""Cluster launcher presets: Hydra's own launcher plugins, with this project's defaults.

``hydra/launcher=submitit_slurm`` and ``hydra/launcher=ray`` keep the plugins' config schemas
(every key of theirs can be overridden) and take defaults for training: one GPU per trial.
``hydra/launcher=submitit_local`` is the plugin's own. Registered over the plugins' configs
when the plugins are installed (``uv sync --extra submitit``, ``--extra ray``).
"""

from __future__ import annotations

import os
import urllib.parse

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cifar.errors import ConfigError
from cifar.stores import is_loopback, loopback_host

# Each SLURM job trains one trial: one GPU, and CPU cores and memory for its data on the GPU.
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 120}
RAY_GPUS_RESOLVER = "cifar_ray_gpus_per_trial"
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
RAY_AWS_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher"
RAY_THIS_MACHINE = ("auto", "local")  # Ray's addresses for a cluster started here, or a new local one


def ray_gpus_per_trial() -> int:
    """One GPU per trial on a Ray cluster that has GPUs, none on one that has not (where asking
    for one would leave the trials waiting forever). Resolved after the launcher joined the cluster."""
    import ray

    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0


def register_launcher_configs() -> None:
    store = ConfigStore.instance()
    try:
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    except ImportError:
        pass  # the submitit extra is not installed
    else:
        store.store(group="hydra/launcher", name="submitit_slurm", node=SlurmQueueConf(**SLURM_DEFAULTS),
                    provider="cifar", replace=True)
    try:
        from hydra_plugins.hydra_ray_launcher._config import RayConf, RayLauncherConf
    except ImportError:
        pass  # the ray extra is not installed
    else:
        OmegaConf.register_resolver(RAY_GPUS_RESOLVER, ray_gpus_per_trial, replace=True)
        # address null: RAY_ADDRESS, else a cluster started on this machine (`ray start --head`), else a new one
        ray = RayConf(init={"address": None}, remote={"num_gpus": f"${{{RAY_GPUS_RESOLVER}:}}"})
        store.store(group="hydra/launcher", name="ray", node=RayLauncherConf(ray=ray), provider="cifar",
                    replace=True)


def runs_jobs_elsewhere(hydra_cfg: DictConfig) -> bool:
    """Whether the launcher runs the jobs on other machines than this one: SLURM's, Ray's on AWS, and Ray's
    on a cluster it joins at another machine's address (``hydra.launcher.ray.init.address`` or
    ``RAY_ADDRESS``). Ray's with no address may use other machines too (a head started here that others
    joined), which is not known before it joins."""
    target = OmegaConf.select(hydra_cfg, "launcher._target_")
    if target in (SLURM_LAUNCHER, RAY_AWS_LAUNCHER):
        return True
    if target != RAY_LAUNCHER:
        return False
    address = OmegaConf.select(hydra_cfg, "launcher.ray.init.address") or os.environ.get("RAY_ADDRESS")
    if not address or address in RAY_THIS_MACHINE:
        return False
    host = urllib.parse.urlsplit(address if "://" in address else f"//{address}").hostname
    return bool(host) and not is_loopback(host)


def check_stores_reach_jobs(hydra_cfg: DictConfig, stores: dict[str, str]) -> None:
    """Refuse a store (by what sets it: its URL) on this machine's loopback address when the launcher runs
    the jobs on other machines, where each job would wait ``mlflow.store_wait_s`` for it in vain."""
    if not runs_jobs_elsewhere(hydra_cfg):
        return
    launcher = OmegaConf.select(hydra_cfg, "runtime.choices.hydra/launcher") or "this launcher"
    for setting, url in stores.items():
        if host := loopback_host(url):
            raise ConfigError(f"{setting}={url} is on this machine only ({host}), and hydra/launcher={launcher} "
                              "runs the jobs on other machines: use an address they reach (the server's host name)")
