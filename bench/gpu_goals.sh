#!/usr/bin/env bash
# The GPU goals of README's Speed section in one go: the machine check, the data cache, then
# bench/time_to_accuracy.py for airbench, airbench_muon, airbench95, resnet9_fast and resnet18_onecycle. Each step's output is also
# written to LOG_DIR. Extra arguments are overrides for every run (trainer.epochs=16, say).
# PRESETS picks the recipes, so that each can have a call of its own where commands are time-limited;
# the data cache is decoded once, and reused where data/processed/cifar10.npz exists.
#
#   bash bench/gpu_goals.sh CIFAR10_ARCHIVE LOG_DIR [SEEDS [OVERRIDES...]]
#   bash bench/gpu_goals.sh ../shared/data/cifar10-jpeg.tar.gz outputs/gpu_goals 5
#   PRESETS=resnet18_onecycle bash bench/gpu_goals.sh ../shared/data/cifar10-jpeg.tar.gz outputs/gpu_goals 5
set -euo pipefail
usage="usage: bash bench/gpu_goals.sh CIFAR10_ARCHIVE LOG_DIR [SEEDS [OVERRIDES...]]"
archive=$(realpath "${1:?$usage}")
mkdir -p "${2:?$usage}"
logs=$(realpath "$2")
seeds=${3:-5}
shift $(($# < 3 ? $# : 3))
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

python3 -m cifar.env 2>&1 | tee "$logs/env.txt"
if [[ ! -f data/processed/cifar10.npz ]]; then
    python3 -m cifar.prepare "$archive" data/processed 2>&1 | tee "$logs/prepare.txt"
fi
for preset in ${PRESETS:-airbench airbench_muon airbench95 resnet9_fast resnet18_onecycle}; do
    python3 bench/time_to_accuracy.py --preset "$preset" --seeds "$seeds" --data data/processed/cifar10.npz "$@" \
        2>&1 | tee "$logs/$preset.txt"
done
