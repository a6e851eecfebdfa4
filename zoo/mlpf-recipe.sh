#!/usr/bin/env bash
# Dataset recipe and training of the released MLPF models (zoo/mlpf-gnnlsh, zoo/mlpf-transformer).
# Every step is seeded; the same commands give the same events on any machine. Runs on CPU (hours) or on a
# GPU machine (minutes). Usage: J=<worker processes> HEPZOO="python -m hepzoo.cli" bash zoo/mlpf-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
mkdir -p data/zoo
$HEPZOO generate ttbar -n 20000 --seed 101 -j "$J" -o data/zoo/ttbar_train.root --no-progress
$HEPZOO generate qcd --pthat-min 20 -n 10000 --seed 104 -j "$J" -o data/zoo/qcd_train.root --no-progress
$HEPZOO generate ttbar -n 1000 --seed 102 -j "$J" -o data/zoo/ttbar_val.root --no-progress
# held-out test sample for the release metrics (never seen in training or validation)
$HEPZOO generate ttbar -n 1000 --seed 103 -j "$J" -o data/zoo/ttbar_test.root --no-progress
if [ "${SKIP_TRAINING:-0}" != 1 ]; then
  $HEPZOO train configs/zoo/mlpf-gnnlsh.yaml
  $HEPZOO train configs/zoo/mlpf-transformer.yaml
fi
