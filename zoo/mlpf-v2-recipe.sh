#!/usr/bin/env bash
# Exact recipe of the MLPF release-2 models (zoo/mlpf-gnnlsh/2, zoo/mlpf-transformer/2), issue 16.
# Data: zoo/mlpf-v2-data.sh (every sample seeded; SCALE=0.2 is what these releases were trained on: 20 400
# training events; SCALE=1 is the full 102 000). Training: configs/zoo/mlpf-{gnnlsh,transformer}-2.yaml, seed 2027,
# on the 2-core development machine, both trainings side by side with one thread each (OMP_NUM_THREADS=1),
# in two stages of ONE run (exact resume from the stage-1 checkpoint, same optimiser and schedule):
#   stage 1: loss.energy_weight_source=element_or_target (gnnlsh steps 1-2500, transformer steps 1-1300);
#   stage 2: the config as committed (energy weights from the element's measured energy), to optim.max_steps.
# The diagnosis between the stages (docs/mlpf-physics.md) found the stage-1 weighting biased energies up.
#   transformer stage 3: 700 more steps from the end of stage 2 (fine-tune: fresh AdamW, lr 3e-4, 50 warm-up,
#   cosine over 700 steps), because its 2200-step budget ended with the stage-1 bias still visible.
# The final checkpoints (optimizer and RNG state included) are committed in checkpoints/mlpf-v2/ so that a
# later session continues exactly (copy to runs/v2/<run>/last.pt and train with --set resume=auto and larger
# optim.max_steps/total_steps, or fine-tune with model.init_weights).
# Usage: J=<worker processes> HEPZOO="hepzoo" bash zoo/mlpf-v2-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
J=$J SCALE=${SCALE:-0.2} HEPZOO=$HEPZOO bash zoo/mlpf-v2-data.sh
declare -A STAGE1=([gnnlsh]=2500 [transformer]=1300)
for m in gnnlsh transformer; do
  OMP_NUM_THREADS=1 $HEPZOO train "configs/zoo/mlpf-$m-2.yaml" \
    --set loss.energy_weight_source=element_or_target --set "optim.max_steps=${STAGE1[$m]}"
  OMP_NUM_THREADS=1 $HEPZOO train "configs/zoo/mlpf-$m-2.yaml" --set resume=auto
  run="runs/v2/mlpf-$m"
  if [ "$m" = transformer ]; then
    OMP_NUM_THREADS=1 $HEPZOO train "configs/zoo/mlpf-$m-2.yaml" --set "model.init_weights=$run/last.pt" \
      --set output_dir=runs/v2/mlpf-transformer-s3 --set optim.lr=3e-4 --set optim.warmup_steps=50 \
      --set optim.total_steps=700 --set optim.max_steps=700 --set snapshot_every_steps=350
    run=runs/v2/mlpf-transformer-s3
  fi
  $HEPZOO zoo release "$run" "mlpf-$m" 2 --checkpoint last.pt --recipe zoo/mlpf-v2-recipe.sh \
    --test data/v2/ttbar_test.root
  $HEPZOO export "mlpf-$m" --version 2
  $HEPZOO zoo set-thresholds "mlpf-$m" --data data/v2/ttbar_test.root
done
