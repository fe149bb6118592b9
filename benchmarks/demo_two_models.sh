#!/usr/bin/env bash
# `textual-inversion demo` on two packaged miniworld models, alternating, each launched as a user launches it and
# timed by GNU time: the package of this checkout ("this") and that of another checkout's src/ ("other"; e.g. a
# worktree of the commit before a model was replaced: git worktree add /tmp/before <commit>). Run it alone: the
# demo takes both cores. Prints one line per run: wall time, training seconds, the scores, peak memory.
# Usage: bash benchmarks/demo_two_models.sh OTHER_SRC [ROUNDS]   (default 2 rounds, the other model first)
set -euo pipefail
other="$(cd "$1" && pwd)"
rounds="${2:-2}"
python="$(command -v python)"
scratch="$(mktemp -d)"
for round in $(seq "$rounds"); do
  for model in other this; do
    mkdir -p "$scratch/$model-$round" && cd "$scratch/$model-$round"
    if [ "$model" = other ]; then path="$other"; else path=""; fi
    PYTHONPATH="$path" HF_HUB_OFFLINE=1 /usr/bin/time -v "$python" -c \
      "import sys; from textual_inversion.cli import console; sys.argv = ['textual-inversion', 'demo']; console()" \
      > log 2>&1
    wall=$(grep "Elapsed (wall clock)" log | awk '{print $NF}')
    peak=$(grep "Maximum resident" log | awk '{print $NF}')
    trained=$(tr '\r' '\n' < log | grep -o "trained in [0-9]* s" | tail -1)
    token=$(grep "learned token" log | awk '{print $3 " / " $4}')
    init=$(grep "baseline: init word" log | awk '{print $4 " / " $5}')
    echo "round $round, $model: $wall wall, $trained, token $token, init word $init, peak $((peak / 1024)) MB"
  done
done
rm -rf "$scratch"
