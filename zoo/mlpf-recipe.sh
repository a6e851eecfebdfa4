#!/usr/bin/env bash
# Exact recipe of the first MLPF releases (zoo/mlpf-gnnlsh/1, zoo/mlpf-transformer/1; removed from the zoo in session 8,
# superseded by releases 2-4; their files are in git history at commit 59c47cd): data, then training
# in two stages. Every step is seeded; the same commands give the same events on any machine (chunk k of a
# run depends only on (seed, k), not on the number of worker processes).
#   stage 1 ran on one H100 (16 CPU cores for generation, J=15), 5 epochs;
#   stage 2 fine-tuned on 2 CPU cores on the first 4000/2000 events of the same training samples.
# Usage: J=<worker processes> HEPZOO="hepzoo" bash zoo/mlpf-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
mkdir -p data/zoo data
$HEPZOO generate ttbar -n 16000 --seed 101 -j "$J" -o data/zoo/ttbar_train.root --no-progress
$HEPZOO generate qcd --pthat-min 20 -n 8000 --seed 104 -j "$J" -o data/zoo/qcd_train.root --no-progress
$HEPZOO generate ttbar -n 1000 --seed 102 -j "$J" -o data/zoo/ttbar_val.root --no-progress
# stage-2 samples: the first events of the stage-1 samples (same seeds and chunks) and the validation sample
$HEPZOO generate ttbar -n 4000 --seed 101 -j "$J" -o data/ttbar_train.root --no-progress
$HEPZOO generate qcd --pthat-min 20 -n 2000 --seed 104 -j "$J" -o data/qcd_train.root --no-progress
$HEPZOO generate ttbar -n 500 --seed 102 -j "$J" -o data/ttbar_val.root --no-progress
# held-out test sample for the release metrics (never seen in training or validation)
$HEPZOO generate ttbar -n 1000 --seed 103 -j "$J" -o data/ttbar_test.root --no-progress
for model in mlpf-gnnlsh mlpf-transformer; do
  $HEPZOO train "configs/zoo/$model.yaml" --set optim.epochs=5
  $HEPZOO train "configs/zoo/$model.yaml" \
    --set 'data.train=["data/ttbar_train.root","data/qcd_train.root"]' --set 'data.val=["data/ttbar_val.root"]' \
    --set "model.init_weights=runs/zoo/$model/best.pt" --set optim.lr=2e-4 --set optim.warmup_steps=50 \
    --set optim.epochs=4 --set data.num_workers=0 --set "output_dir=runs/finetune/$model"
  $HEPZOO zoo release "runs/finetune/$model" "$model" 1 --recipe zoo/mlpf-recipe.sh --test data/ttbar_test.root
done
