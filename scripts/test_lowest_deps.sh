#!/usr/bin/env bash
# The tests on the oldest release of each direct dependency that pyproject.toml admits (uv's
# lowest-direct resolution): a check that its lower bounds are true, so that `pip install` next to
# older packages gives a working install. It runs in a throwaway clone of HEAD: uv.lock and .venv
# stay as they are (a lowest-direct `uv sync` rewrites the lock). Arguments go to pytest.
#
# With TORCH set, torch is of that release and torchvision of its match (2.11 and 0.26), the oldest
# pyproject.toml does not admit but the code must keep working on: the GPU machines' (README, On a GPU).
#
#   bash scripts/test_lowest_deps.sh              # the whole suite
#   bash scripts/test_lowest_deps.sh -m "not slow"
#   TORCH=2.11 bash scripts/test_lowest_deps.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet . "$work/cifar"
if [ -d ../shared ]; then  # the real data copy, which the slow tests find at ../shared/data
    ln -s "$(cd .. && pwd)/shared" "$work/shared"
fi
cd "$work/cifar"
uv sync --quiet --resolution lowest-direct --compile-bytecode --extra postgres --extra submitit --extra ray
if [ -n "${TORCH:-}" ]; then  # torchvision 0.(minor + 15) is built for torch 2.minor
    uv pip install --quiet --compile-bytecode "torch==$TORCH.*" "torchvision==0.$((${TORCH#2.} + 15)).*"
fi
uv run --no-sync python - <<'EOF'
import re
import tomllib
from importlib.metadata import version

dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = [re.match(r"[A-Za-z0-9_.-]+", d).group() for d in dependencies]
print("lowest direct dependencies:", ", ".join(f"{name} {version(name)}" for name in names))
EOF
uv run --no-sync pytest "$@"
