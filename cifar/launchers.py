"""Cluster launcher presets: Hydra's own launcher plugins, with this project's defaults.

``hydra/launcher=submitit_slurm`` and ``hydra/launcher=ray`` keep the plugins' config schemas
(every key of theirs can be overridden) and take defaults for training: one GPU per trial.
``hydra/launcher=submitit_local`` is the plugin's own. Registered over the plugins' configs
when the plugins are installed (``uv sync --extra submitit``, ``--extra ray``).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

# Each SLURM job trains one trial: one GPU, and CPU cores and memory for its data on the GPU.
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 120}
RAY_GPUS_RESOLVER = "cifar_ray_gpus_per_trial"


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
