"""What checking a sweep's job configs before they start costs, beside what Hydra spends composing them.

A grid sweep composes every job's config before the first job starts (Hydra's own work, here done by the
sweep's callback in place of the basic sweeper), and checks each as its task will (``cifar.sweeper.check_job``:
the config's ``validate``). An Optuna search
composes and checks, before it starts, the few trials of its search space that take every choice and
range end (``cifar.sweeper_impl.check_search_space``), and each trial's config before its job starts.
This times, in one process, interleaved and repeated:

- compose:      Hydra composing one job's config (``load_sweep_config``), which every job costs anyway;
- check:        composing and checking it (``check_job``), the grid's and each trial's cost;
- search space: the Optuna preset's search-space check, whole (``--search``: its probe trials);

and prints medians and the ratios, with the command's start-up (``python -m cifar.train OVERRIDES --cfg job``:
its imports and the config composed, nothing run) beside them for scale.

    uv run python bench/config_checks.py --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def config_loader():
    """Hydra's config loader for ``conf/``, as the CLI sets it up."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import cifar.hydra_plugin  # noqa: F401  registers the schemas and sweepers, as the CLI does

    initialize_config_dir(str(REPO / "conf"))
    return GlobalHydra.instance().config_loader()


def sweep_config(loader, overrides: list[str]):
    """The master config of ``python -m cifar.train -m OVERRIDES``."""
    from hydra.types import RunMode

    return loader.load_configuration("config", overrides, run_mode=RunMode.MULTIRUN)


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--job", default="experiment=airbench", help="the job's overrides (space-separated)")
    parser.add_argument("--search", default="hparams_search=optuna", help="the Optuna search's overrides")
    args = parser.parse_args()

    from cifar.sweeper import check_job, sweeper_arguments
    from cifar.sweeper_impl import check_search_space, probe_trials, search_space

    job = args.job.split()
    loader = config_loader()
    grid, search = sweep_config(loader, job), sweep_config(loader, args.search.split())
    probes = probe_trials(*search_space(sweeper_arguments(search)))
    times: dict[str, list[float]] = {"compose": [], "check": [], "search space": []}
    for _ in range(args.repeats):
        for name, step in (("compose", lambda: loader.load_sweep_config(grid, job)),
                           ("check", lambda: check_job(loader, grid, job, "the job")),
                           ("search space", lambda: check_search_space(search, loader))):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    startup = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cifar.train", *args.search.split(), "--cfg", "job"],
                       cwd=REPO, check=True, capture_output=True)
        startup.append(time.perf_counter() - start)

    compose, check, space = (median_ms(times[name]) for name in ("compose", "check", "search space"))
    print(f"medians of {args.repeats}, job `{args.job}`, search `{args.search}` ({len(probes)} probe trials)")
    print("| step | ms |\n|---|---|")
    print(f"| compose a job's config (Hydra) | {compose:.1f} |")
    print(f"| compose and check it | {check:.1f} (the check: +{check - compose:.1f}, "
          f"{(check - compose) / compose:.0%} of composing) |")
    print(f"| check the search space | {space:.1f} ({space / compose:.1f}x composing a job) |")
    print(f"| the command's start-up, `--cfg job` (median of 3) | {median_ms(startup):.0f} |")


if __name__ == "__main__":
    main()
