#!/usr/bin/env bash
# Wheels to run cifar on an x86-64 Linux machine that has PyTorch but no network (a GPU node, say):
# the locked runtime dependencies for CPython PYTHON_VERSION, less torch and torchvision, less DVC
# and optuna-dashboard (the pipeline and the dashboard are not needed to train), less the packages
# named in SKIP_FILE (those already on that machine: one name a line, or `pip list --format=freeze`
# as printed there); and this project as a wheel, whose entry point registers its Hydra plugin.
#
#   bash scripts/offline_wheels.sh DEST PYTHON_VERSION [SKIP_FILE]
#   # there, from this repository's root:
#   pip install --no-index --no-deps --target /tmp/site DEST/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
usage="usage: bash scripts/offline_wheels.sh DEST PYTHON_VERSION [SKIP_FILE]"
dest=${1:?$usage}
python_version=${2:?$usage}
skip_file=${3:-/dev/null}
cd "$(dirname "$0")/.."
mkdir -p "$dest"

normalize() { tr '[:upper:]_.' '[:lower:]--'; }
skip=$(sed 's/[=<>; ].*//' "$skip_file" | normalize | sort -u)
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
uv export --frozen --no-dev --no-hashes --no-annotate --no-header --no-emit-project \
    --prune torch --prune torchvision --prune dvc --prune optuna-dashboard |
    while read -r line; do
        name=$(sed 's/[=<>; ].*//' <<<"$line" | normalize)
        grep -qxF "$name" <<<"$skip" || echo "$line"
    done >"$requirements"

platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version "$python_version" "${platforms[@]}" -r "$requirements" -d "$dest"
uv build --quiet --wheel --out-dir "$dest"
ls "$dest" | wc -l | xargs echo "wheels in $dest:"
du -sh "$dest"
