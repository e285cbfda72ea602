"""Start-up cost of a run: the installed packages' bytecode against compiling their sources.

Where ``PYTHONDONTWRITEBYTECODE`` is set (CI images, containers), Python never caches the
bytecode it compiles, so unless the installer wrote it (``uv sync --compile-bytecode``), every
process compiles torch's, mlflow's and their dependencies' sources again. This times, in fresh
processes, interleaved and repeated:

- imports:  ``import cifar.task, torch._dynamo`` (what every run imports before its first epoch;
  torch's optimizers import torch._dynamo when built);
- tiny run: ``python -m cifar.train`` on the test suite's fake data (160 training images,
  2 epochs, no logged model), into a fresh MLflow store: a run that is almost all start-up;

each with the bytecode in the environment ("bytecode") and with it hidden behind an empty
``PYTHONPYCACHEPREFIX``, so that every module is compiled from source ("sources").

    uv sync --locked --compile-bytecode        # once, if the environment has no bytecode yet
    uv run python bench/startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar.env import torch_bytecode_cached  # noqa: E402
from tests import fakedata  # noqa: E402
from tests.conftest import train_command  # noqa: E402

IMPORTS = [sys.executable, "-c", "import cifar.task, torch._dynamo"]


def seconds(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch_bytecode_cached():
        sys.exit("This environment has no bytecode for torch: run `uv sync --locked --compile-bytecode` first")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = fakedata.write_official(tmp / "data")
        empty_prefix = tmp / "no-bytecode"
        empty_prefix.mkdir()
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}
        modes = {"bytecode": base, "sources": {**base, "PYTHONPYCACHEPREFIX": str(empty_prefix)}}
        times: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeats):
            for mode, env in modes.items():
                workdir = tmp / f"{mode}-{repeat}"
                workdir.mkdir()
                env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
                times.setdefault(("imports", mode), []).append(seconds(IMPORTS, env, REPO))
                times.setdefault(("tiny run", mode), []).append(seconds(train_command(data, workdir), env, workdir))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        assert not any(empty_prefix.iterdir()), "bytecode was written under the empty prefix"

    print(f"Medians of {args.repeats} interleaved repeats, seconds (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs)")
    print("| measure | bytecode | sources | sources / bytecode |")
    print("|---|---:|---:|---:|")
    for measure in ("imports", "tiny run"):
        with_bytecode = statistics.median(times[(measure, "bytecode")])
        from_sources = statistics.median(times[(measure, "sources")])
        print(f"| {measure} | {with_bytecode:.2f} | {from_sources:.2f} | {from_sources / with_bytecode:.2f}x |")


if __name__ == "__main__":
    main()
