"""This package's Hydra plugin entry point (``[project.entry-points."hydra.plugins"]``).

Hydra loads it in every process that composes a config; importing it registers the config
schemas, the sweepers' configs and the cluster launcher presets, so ``conf/`` composes
alike in the CLI, in DVC's Hydra composition (``dvc exp run``) and with Hydra's compose API.
"""

from cifar.config import register_configs
from cifar.launchers import register_launcher_configs
from cifar.sweeper import CheckedBasicSweeper, PruningOptunaSweeper, register_sweeper_configs

register_configs()
register_sweeper_configs()
register_launcher_configs()

__all__ = ["CheckedBasicSweeper", "PruningOptunaSweeper"]
