"""``hydra/launcher=submitit_slurm`` and ``hydra/launcher=submitit_local``: Hydra's submitit launchers, whose
jobs take up their training where they were stopped when submitit requeues them.

SLURM signals a job (SIGUSR2) ``signal_delay_s`` before its ``timeout_min`` is up, and where a job of
higher priority preempts it; submitit then requeues the job with the call that the launcher's
``checkpoint`` gives (``max_num_timeout`` times at most, for timeouts). Hydra's gives the job's call
unchanged: the requeued job trained again from epoch 1 in the same output dir, its first MLflow run
left stopped, and a job longer than ``timeout_min`` never finished. Here the requeued call has
``trainer.resume=true``: the job continues from the ``last.pt`` of its output dir, in the same MLflow
run, as a job of a resumed sweep does.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from cifar.continuation import resumed


class _ResumedWhenRequeued:
    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        """The call that submitit requeues: the job's, resumed (one ``trainer.resume`` value, also for a job of a
        resumed sweep, or one requeued before)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, resumed(sweep_overrides), *args, **kwargs)


class LocalLauncher(_ResumedWhenRequeued, submitit_launcher.LocalLauncher):
    pass


class SlurmLauncher(_ResumedWhenRequeued, submitit_launcher.SlurmLauncher):
    pass
