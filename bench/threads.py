"""What torch threads beyond the CPU cores cost a training step: the reason ``trainer.threads`` is refused above
the cores that the process may use (``cifar.parallel.check_threads``).

Times passes of this project's training step (``random_steps.py``) with each thread count in turn, interleaved,
and prints each count's median time a step and its ratio to the step with as many threads as cores.

    uv run python bench/threads.py
    uv run python bench/threads.py --model resnet18 --batch 64 --threads 2 4 16 64

Under a CPU quota, as in a container limited to 1 CPU (here a cgroup v1 group, bound where a container sees its own;
as root, on a machine with cgroup v1 mounted):

    mkdir /sys/fs/cgroup/cpu/bench && echo 100000 > /sys/fs/cgroup/cpu/bench/cpu.cfs_quota_us
    bash -c 'echo $$ > /sys/fs/cgroup/cpu/bench/cgroup.procs; exec unshare --cgroup --mount bash -c \
        "mount --bind /sys/fs/cgroup/cpu/bench /sys/fs/cgroup/cpu && uv run python bench/threads.py --threads 1 2 8"'
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.random_steps import RandomSteps  # noqa: E402
from cifar.parallel import cpu_cores  # noqa: E402


def main() -> None:
    cores = cpu_cores()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplecnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps a pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes of each thread count, interleaved")
    parser.add_argument("--threads", type=int, nargs="+", default=[cores, 2 * cores, 8 * cores, 32 * cores])
    args = parser.parse_args()

    steps = RandomSteps(args.batch, args.steps)
    model = steps.model(args.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    seconds: dict[int, list[float]] = {n: [] for n in args.threads}
    for repeat in range(args.repeats + 1):  # the first round warms up each count (oneDNN primitives, threads)
        for n in args.threads:
            torch.set_num_threads(n)
            start = time.perf_counter()
            steps.train(model, optimizer)
            if repeat:
                seconds[n].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(seconds[cores]) if cores in seconds else None
    print(f"{args.model}, batch {args.batch}, {cores} cores, medians of {args.repeats} passes of {args.steps} steps\n")
    print("| torch threads | ms a step | vs as many threads as cores |\n|---:|---:|---:|")
    for n, times in seconds.items():
        ratio = f"{statistics.median(times) / base:.1f}x" if base else ""
        print(f"| {n} | {statistics.median(times) * 1e3:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
