#!/usr/bin/env bash
# Exact recipe of the MLPF release-4 models zoo/mlpf-gnnlsh/4 and zoo/mlpf-transformer/4 (issue 16, sessions 8-9).
# Data: zoo/mlpf-v2-data.sh at SCALE=1 into data/v4 (seeds and sizes: zoo/mlpf-v4-recipe.sh); calibration sample
# ttbar seed 206 (working point only); held-out test ttbar seed 301.
# GNN-LSH starts from the committed full-data checkpoint checkpoints/mlpf-v4/gnnlsh_last.pt (zoo/mlpf-v4-recipe.sh),
# the transformer from the committed release-3 checkpoint checkpoints/mlpf-v3/transformer_last.pt (zoo/mlpf-v3-recipe.sh):
#   1. fine-tune with the jet-level loss term (training/jet_loss.py), 1500 steps, lr 3e-4 cosine, one CPU thread:
#      configs/zoo/mlpf-gnnlsh-jet.yaml (magnitude mode, weight 1.0, seed 2029),
#      configs/zoo/mlpf-transformer-jet.yaml (vector mode, weight 0.3, seed 2031; the transformer's first training
#      on the full data);
#   2. the decision working point on the calibration sample with the release's decoding
#      (massless cluster candidates, models/mlpf_common.MLPFHeads):
#      python -m hepzoo.validation.working_point ... --decoding massless_clusters=true;
#   3. release with that decoding and working point, export, thresholds from the held-out ttbar sample.
# Usage: J=<worker processes> HEPZOO="hepzoo" PY=python bash zoo/mlpf-v7-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
PY=${PY:-python}
[ -f data/v4/ttbar_train.root ] || J=$J SCALE=1 OUT=data/v4 HEPZOO=$HEPZOO bash zoo/mlpf-v2-data.sh
OMP_NUM_THREADS=1 $HEPZOO train configs/zoo/mlpf-gnnlsh-jet.yaml         # -> runs/v9/jet1d
OMP_NUM_THREADS=1 $HEPZOO train configs/zoo/mlpf-transformer-jet.yaml    # -> runs/v7/mlpf-transformer
for m in gnnlsh transformer; do
  cfg="configs/zoo/mlpf-$m-jet.yaml"
  run=$([ $m = gnnlsh ] && echo runs/v9/jet1d || echo runs/v7/mlpf-transformer)
  $PY -m hepzoo.validation.working_point --events data/v4/ttbar_calib.root -n 2000 --decoding massless_clusters=true \
    --snapshot "$run/last.pt" --config "$cfg" --json "$run/working_point_massless.json"
  $HEPZOO zoo release "$run" "mlpf-$m" 4 --checkpoint last.pt --recipe zoo/mlpf-v7-recipe.sh \
    --test data/v4/ttbar_test.root --decoding massless_clusters=true --working-point "$run/working_point_massless.json"
  $HEPZOO export "mlpf-$m" --version 4
  $HEPZOO zoo set-thresholds "mlpf-$m" --data data/v4/ttbar_test.root
done
