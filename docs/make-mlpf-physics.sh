#!/usr/bin/env bash
# Re-makes every number in docs/mlpf-physics.md from the held-out samples of zoo/mlpf-v2-data.sh
# (ttbar seed 301, QCD pT-hat > 50 GeV seed 302; never used in training or model selection).
# Usage: bash docs/make-mlpf-physics.sh [N_EVENTS]   (after `make setup` and `J=2 bash zoo/mlpf-v2-data.sh`)
set -euo pipefail
N=${1:-2000}
PY=${PY:-.venv/bin/python}
HEPZOO=${HEPZOO:-.venv/bin/hepzoo}
OUT=${OUT:-validate_out/mlpf-physics}
mkdir -p "$OUT"
# 1. diagnosis: oracle ablations and per-element-type response, every MLPF release next to PF (ttbar)
$PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "$N" \
  --model mlpf-gnnlsh/1 --model mlpf-transformer/1 --model mlpf-gnnlsh/2 --model mlpf-transformer/2 \
  --json "$OUT/diagnosis_ttbar.json" | tee "$OUT/diagnosis_ttbar.md"
$PY -m hepzoo.validation.diagnosis --events data/v2/qcd50_test.root -n 1000 \
  --model mlpf-gnnlsh/2 --model mlpf-transformer/2 --json "$OUT/diagnosis_qcd50.json" | tee "$OUT/diagnosis_qcd50.md"
# 2. learning curves from the training snapshots (needs the training runs of zoo/mlpf-v2-recipe.sh)
if [ -d runs/v2/mlpf-gnnlsh ]; then
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${LC_N:-300}" \
    --run runs/v2/mlpf-gnnlsh --run runs/v2/mlpf-transformer --run runs/v2/mlpf-transformer-s3 \
    $( [ -d runs/v2/lc-gnnlsh-2k ] && echo --run runs/v2/lc-gnnlsh-2k ) | tee "$OUT/learning_curves.md"
fi
# 3. the deployed artifacts (model.onnx through the runtime) with uncertainties: efficiencies, fake rates, jets, MET
for m in mlpf-gnnlsh mlpf-transformer; do
  for sample in ttbar_test qcd50_test; do
    $HEPZOO validate "zoo/$m/2" --data "data/v2/$sample.root" --no-gate --out "$OUT/$m-2-$sample" >/dev/null
  done
done
