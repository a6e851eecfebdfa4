#!/usr/bin/env bash
# Exact recipe of the released flash-sim models (zoo/flashsim-jet/1, zoo/flashsim-track/1). Every step is seeded;
# trained on 2 CPU cores in a few minutes. Usage: J=<worker processes> HEPZOO="hepzoo" bash zoo/flashsim-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
mkdir -p data
$HEPZOO generate ttbar -n 4000 --seed 101 -j "$J" -o data/ttbar_train.root --no-progress
$HEPZOO generate qcd --pthat-min 20 -n 2000 --seed 104 -j "$J" -o data/qcd_train.root --no-progress
$HEPZOO generate ttbar -n 500 --seed 102 -j "$J" -o data/ttbar_val.root --no-progress
# held-out full chain, and an independent full-chain sample for the noise floor
$HEPZOO generate ttbar -n 1000 --seed 103 -j "$J" -o data/ttbar_test.root --no-progress
$HEPZOO generate ttbar -n 1000 --seed 105 -j "$J" -o data/ttbar_test_b.root --no-progress
OMP_NUM_THREADS=1 $HEPZOO train configs/flashsim-jet.yaml --set data.num_workers=0 --set optim.epochs=100 \
  --set output_dir=runs/flashsim-jet-100
OMP_NUM_THREADS=1 $HEPZOO train configs/flashsim-track.yaml --set data.num_workers=0 --set data.batch_size=4096 \
  --set optim.epochs=25 --set optim.warmup_steps=100 --set output_dir=runs/flashsim-track-25
$HEPZOO zoo release runs/flashsim-jet-100 flashsim-jet 1 --recipe zoo/flashsim-recipe.sh \
  --test data/ttbar_test.root --noise-floor data/ttbar_test_b.root
$HEPZOO zoo release runs/flashsim-track-25 flashsim-track 1 --recipe zoo/flashsim-recipe.sh \
  --test data/ttbar_test.root --noise-floor data/ttbar_test_b.root
