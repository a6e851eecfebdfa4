#!/usr/bin/env bash
# Exact recipe of zoo/mlpf-transformer/5 (issue 16, session 10). Data: zoo/mlpf-v2-data.sh at SCALE=1 into data/v4
# (seeds and sizes: zoo/mlpf-v4-recipe.sh); calibration sample ttbar seed 206 (working point only); held-out test
# ttbar seed 301.
# Starts from the committed release-4 weights zoo/mlpf-transformer/4/weights.pt (recipe zoo/mlpf-v7-recipe.sh):
#   1. fine-tune 1500 steps (lr 3e-4 cosine, seed 2035, one CPU thread) with the jet-level loss term as GNN-LSH's
#      release 4 uses it (magnitude mode, weight 1.0) and each jet weighted by (pT / 20 GeV)^1 (loss.jet_pt_power):
#      configs/zoo/mlpf-transformer-jet2.yaml -> runs/v10/transformer-jet1pt;
#   2. the decision working point on the calibration sample with massless cluster candidates;
#   3. release with that decoding and working point, export, thresholds from the held-out ttbar sample.
# Usage: J=<worker processes> HEPZOO="hepzoo" PY=python bash zoo/mlpf-v8-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
PY=${PY:-python}
[ -f data/v4/ttbar_train.root ] || J=$J SCALE=1 OUT=data/v4 HEPZOO=$HEPZOO bash zoo/mlpf-v2-data.sh
cfg=configs/zoo/mlpf-transformer-jet2.yaml
run=runs/v10/transformer-jet1pt
OMP_NUM_THREADS=1 $HEPZOO train "$cfg"
$PY -m hepzoo.validation.working_point --events data/v4/ttbar_calib.root -n 2000 --decoding massless_clusters=true \
  --snapshot "$run/last.pt" --config "$cfg" --json "$run/working_point_massless.json"
$HEPZOO zoo release "$run" mlpf-transformer 5 --checkpoint last.pt --recipe zoo/mlpf-v8-recipe.sh \
  --test data/v4/ttbar_test.root --decoding massless_clusters=true --working-point "$run/working_point_massless.json"
$HEPZOO export mlpf-transformer --version 5
$HEPZOO zoo set-thresholds mlpf-transformer --data data/v4/ttbar_test.root
