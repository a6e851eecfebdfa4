#!/usr/bin/env bash
# Exact recipe of the MLPF release-3 models (zoo/mlpf-gnnlsh/3, zoo/mlpf-transformer/3), issue 16.
# Data: zoo/mlpf-v2-data.sh at SCALE=0.2 (20 400 training events, the same as release 2) plus the calibration
# sample ttbar seed 206 (working point only). Starts from the committed release-2 checkpoints
# (checkpoints/mlpf-v2/, optimizer state included; zoo/mlpf-v2-recipe.sh made them).
#   1. fine-tune with track slots decoded from their measured track (model.kwargs.measured_tracks), seed 2027,
#      one CPU thread per training: configs/zoo/mlpf-gnnlsh-3.yaml (2500 steps, lr 3e-4),
#      configs/zoo/mlpf-transformer-3.yaml (1000 steps, lr 3e-4);
#   2. the decision working point on the calibration sample (python -m hepzoo.validation.working_point):
#      per-class logit offsets that meet the per-class rule against PF with the smallest change;
#   3. release with the working point, export, thresholds from the held-out ttbar sample (seed 301).
# The anchor (issue 16, deliverable 4): particleflow's own MLPF trained the same way as stage 1 of the
# release-2 GNN-LSH (configs/zoo/particleflow-gnnlsh-anchor.yaml; needs particleflow, see make bench).
# Usage: J=<worker processes> HEPZOO="hepzoo" PY=python bash zoo/mlpf-v3-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
PY=${PY:-python}
J=$J SCALE=${SCALE:-0.2} HEPZOO=$HEPZOO bash zoo/mlpf-v2-data.sh
for m in gnnlsh transformer; do
  OMP_NUM_THREADS=1 $HEPZOO train "configs/zoo/mlpf-$m-3.yaml"
  run="runs/v3/mlpf-$m"
  $PY -m hepzoo.validation.working_point --events data/v2/ttbar_calib.root -n 2000 \
    --snapshot "$run/last.pt" --config "configs/zoo/mlpf-$m-3.yaml" --json "$run/working_point.json"
  $HEPZOO zoo release "$run" "mlpf-$m" 3 --checkpoint last.pt --recipe zoo/mlpf-v3-recipe.sh \
    --test data/v2/ttbar_test.root --working-point "$run/working_point.json"
  $HEPZOO export "mlpf-$m" --version 3
  $HEPZOO zoo set-thresholds "mlpf-$m" --data data/v2/ttbar_test.root
done
if $PY -c "import mlpf.model.mlpf" 2>/dev/null; then
  OMP_NUM_THREADS=1 $HEPZOO train configs/zoo/particleflow-gnnlsh-anchor.yaml
fi
