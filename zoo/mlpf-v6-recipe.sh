#!/usr/bin/env bash
# Recipe of the wider GNN-LSH trained from scratch over several CPU sessions (issue 16; started in session 7, not
# released). Data: zoo/mlpf-v2-data.sh at SCALE=1 into data/v4 (see zoo/mlpf-v4-recipe.sh for seeds and sizes).
# Training: configs/zoo/mlpf-gnnlsh-w192.yaml (width 192, seed 2030, lr 1e-3, one cosine schedule over 12 000 steps),
# one CPU thread. Each session resumes exactly from the committed checkpoint and commits the new one:
#   cp runs/v6/gnnlsh-w192/last.pt checkpoints/mlpf-v6/gnnlsh-w192_last.pt
# Evaluation of its snapshots (learning curve, 300 held-out ttbar events):
#   python -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n 300 --run runs/v6/gnnlsh-w192
# Usage: J=<worker processes> HEPZOO="hepzoo" bash zoo/mlpf-v6-recipe.sh
set -euo pipefail
J=${J:-2}
HEPZOO=${HEPZOO:-hepzoo}
[ -f data/v4/ttbar_train.root ] || J=$J SCALE=1 OUT=data/v4 HEPZOO=$HEPZOO bash zoo/mlpf-v2-data.sh
resume=()
[ -f checkpoints/mlpf-v6/gnnlsh-w192_last.pt ] && resume=(--set resume=checkpoints/mlpf-v6/gnnlsh-w192_last.pt)
OMP_NUM_THREADS=1 $HEPZOO train configs/zoo/mlpf-gnnlsh-w192.yaml "${resume[@]}"
