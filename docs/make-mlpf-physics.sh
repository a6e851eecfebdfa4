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
  --model mlpf-gnnlsh/2 --model mlpf-transformer/2 \
  --model mlpf-gnnlsh/3 --model mlpf-transformer/3 --model mlpf-gnnlsh/4 \
  --json "$OUT/diagnosis_ttbar.json" | tee "$OUT/diagnosis_ttbar.md"
$PY -m hepzoo.validation.diagnosis --events data/v2/qcd50_test.root -n 1000 \
  --model mlpf-gnnlsh/2 --model mlpf-transformer/2 --model mlpf-gnnlsh/3 --model mlpf-transformer/3 \
  --model mlpf-gnnlsh/4 --json "$OUT/diagnosis_qcd50.json" | tee "$OUT/diagnosis_qcd50.md"
# 2. learning curves from the training snapshots (needs the training runs of zoo/mlpf-v2-recipe.sh)
if [ -d runs/v2/mlpf-gnnlsh ]; then
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${LC_N:-300}" \
    --run runs/v2/mlpf-gnnlsh --run runs/v2/mlpf-transformer --run runs/v2/mlpf-transformer-s3 \
    $( [ -d runs/v2/lc-gnnlsh-2k ] && echo --run runs/v2/lc-gnnlsh-2k ) | tee "$OUT/learning_curves.md"
fi
# 3. the deployed artifacts (model.onnx through the runtime) with uncertainties: efficiencies, fake rates, jets, MET
for v in 2 3 4 5; do
  for m in mlpf-gnnlsh mlpf-transformer; do
    [ -d "zoo/$m/$v" ] || continue
    for sample in ttbar_test qcd50_test; do
      $HEPZOO validate "zoo/$m/$v" --data "data/v2/$sample.root" --no-gate --out "$OUT/$m-$v-$sample" >/dev/null
    done
  done
done
# 4. release 3, one change at a time (same 1000 held-out ttbar events): the /2 weights with measured track
#    slots, the fine-tuned weights (checkpoints/mlpf-v3) at the trained working point; the releases with the
#    chosen working point are the /3 rows of step 1
$PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${ABL_N:-1000}" \
  --snapshot zoo/mlpf-gnnlsh/2/weights.pt --config configs/zoo/mlpf-gnnlsh-3.yaml \
  --snapshot checkpoints/mlpf-v3/gnnlsh_last.pt --config configs/zoo/mlpf-gnnlsh-3.yaml \
  --snapshot zoo/mlpf-transformer/2/weights.pt --config configs/zoo/mlpf-transformer-3.yaml \
  --snapshot checkpoints/mlpf-v3/transformer_last.pt --config configs/zoo/mlpf-transformer-3.yaml \
  --json "$OUT/ablation_v3.json" | tee "$OUT/ablation_v3.md"
# 5. particleflow's own MLPF on our data (deliverable 4): its snapshot and ours after the same 2500 steps of the
#    same stage-1 training (checkpoints/mlpf-v3/*_step2500.pt), and its learning curve when the run is here
$PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${ABL_N:-1000}" \
  --snapshot checkpoints/mlpf-v3/gnnlsh_stage1_step2500.pt --config configs/zoo/mlpf-gnnlsh-2.yaml \
  --snapshot checkpoints/mlpf-v3/particleflow_gnnlsh_step2500.pt --config configs/zoo/particleflow-gnnlsh-anchor.yaml \
  --json "$OUT/anchor.json" | tee "$OUT/anchor.md"
if [ -d runs/v3/particleflow-gnnlsh ]; then
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${LC_N:-300}" \
    --run runs/v3/particleflow-gnnlsh | tee "$OUT/learning_curve_particleflow.md"
fi
# 6. one-change ablations of release 2's joint changes (needs the three 1500-step runs of section 2 of the page:
#    hepzoo train configs/zoo/mlpf-gnnlsh-2.yaml --set loss.energy_weight_source=element_or_target
#    --set optim.max_steps=1500 [--set model.kwargs.link_window=0 | --set loss.energy_weight_power=0]
#    --set output_dir=runs/v3/abl-gnnlsh-{nolinks,noenergyweight}; the full run's snapshot is runs/v2/mlpf-gnnlsh's)
if [ -d runs/v3/abl-gnnlsh-nolinks ] && [ -d runs/v3/abl-gnnlsh-noenergyweight ]; then
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${ABL_N:-1000}" \
    --snapshot runs/v2/mlpf-gnnlsh/snapshots/step_0001500.pt --config configs/zoo/mlpf-gnnlsh-2.yaml \
    --snapshot runs/v3/abl-gnnlsh-nolinks/snapshots/step_0001500.pt --config runs/v3/abl-gnnlsh-nolinks/config.yaml \
    --snapshot runs/v3/abl-gnnlsh-noenergyweight/snapshots/step_0001500.pt \
    --config runs/v3/abl-gnnlsh-noenergyweight/config.yaml --json "$OUT/ablation_v2.json" | tee "$OUT/ablation_v2.md"
fi
# 7. five times the training data (session 6, zoo/mlpf-v4-recipe.sh: data/v4 at SCALE=1, checkpoints/mlpf-v4):
#    the /3 weights against the full-data fine-tune at the same decoding, and the run's learning curve
$PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${ABL_N:-1000}" \
  --snapshot checkpoints/mlpf-v3/gnnlsh_last.pt --config configs/zoo/mlpf-gnnlsh-3.yaml \
  --snapshot checkpoints/mlpf-v4/gnnlsh_last.pt --config configs/zoo/mlpf-gnnlsh-4.yaml \
  --json "$OUT/ablation_v4.json" | tee "$OUT/ablation_v4.md"
if [ -d runs/v4/mlpf-gnnlsh ]; then
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_test.root -n "${LC_N:-300}" \
    --run runs/v4/mlpf-gnnlsh | tee "$OUT/learning_curve_v4.md"
fi
# 8. session 7: two one-change fine-tunes of the full-data checkpoint against the same fine-tune unchanged
#    (1500 steps, seed 2029, lr 3e-4 cosine; each about 20 min on one thread), judged on the calibration sample
#    (ttbar seed 206, 2000 events) as model choices are:
#      common="--set model.init_weights=checkpoints/mlpf-v4/gnnlsh_last.pt --set optim.max_steps=1500
#              --set optim.total_steps=1500 --set seed=2029 --set snapshot_every_steps=500"
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set output_dir=runs/v5/ew05                 (control)
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set loss.energy_weight_power=1.0 --set output_dir=runs/v5/ew1
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set model.kwargs.link_excess=true --set output_dir=runs/v5/excess
if [ -d runs/v5/excess ]; then
  args=()
  for r in ew05 ew1 excess; do args+=(--snapshot "runs/v5/$r/last.pt" --config "runs/v5/$r/config.yaml"); done
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_calib.root -n 2000 "${args[@]}" \
    --json "$OUT/ablation_v5.json" | tee "$OUT/ablation_v5.md"
fi
# 9. session 8: the jet-level loss term (training/jet_loss.py), one-change fine-tunes of the same checkpoint as step 8
#    (same common settings), judged on the calibration sample with the diagnosis and docs/jet_cone.py:
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set loss.jet_weight=1.0 --set output_dir=runs/v7/jet1
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set loss.jet_weight=1.0 --set loss.jet_class_gradient=false --set output_dir=runs/v7/jet1reg
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set loss.jet_weight=0.3 --set output_dir=runs/v7/jet03
#      hepzoo train configs/zoo/mlpf-gnnlsh-4.yaml $common --set loss.jet_weight=0.3 --set loss.jet_vector=true --set output_dir=runs/v7/jet03v
#      hepzoo train configs/zoo/mlpf-transformer-jet.yaml                       (transformer, output runs/v7/mlpf-transformer)
#    (runs/v7/jet03 was trained before the predicted directions were detached in the term; its detached rerun is
#    runs/v7/jet03d: the same command with the current code.)
if [ -d runs/v7/jet03v ]; then
  args=()
  for r in jet1 jet1reg jet03 jet03d jet03v; do
    [ -d "runs/v7/$r" ] && args+=(--snapshot "runs/v7/$r/last.pt" --config "runs/v7/$r/config.yaml")
  done
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_calib.root -n 2000 "${args[@]}" \
    --json "$OUT/ablation_v7.json" | tee "$OUT/ablation_v7.md"
  $PY docs/jet_cone.py --events data/v2/ttbar_calib.root -n 2000 runs/v5/ew05 \
    $(for r in jet03 jet03d jet03v mlpf-transformer; do [ -d "runs/v7/$r" ] && echo "runs/v7/$r"; done) | tee "$OUT/jet_cone_v7.md"
fi
# 10. session 9: massless cluster candidates (models/mlpf_common.MLPFHeads, massless_clusters: E = pT cosh(eta) on
#    cluster slots; a decoding change, same weights), on the control and the jet-loss runs of step 9 (calibration
#    sample); then release 4 (zoo/mlpf-v7-recipe.sh) is in steps 1 and 3 with the other releases.
if [ -d runs/v7/jet03v ]; then
  args=()
  for r in v5/ew05 v7/jet1 v7/jet03d v7/jet03v v7/mlpf-transformer; do
    [ -d "runs/$r" ] && args+=(--snapshot "runs/$r/last.pt" --config "runs/$r/config.yaml")
  done
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_calib.root -n 2000 "${args[@]}" \
    --decoding massless_clusters=true --json "$OUT/ablation_massless.json" | tee "$OUT/ablation_massless.md"
  $PY docs/jet_cone.py --events data/v2/ttbar_calib.root -n 2000 --decoding massless_clusters=true runs/v5/ew05 \
    $(for r in jet1 jet03d jet03v mlpf-transformer; do [ -d "runs/v7/$r" ] && echo "runs/v7/$r"; done) | tee "$OUT/jet_cone_massless.md"
fi
# 11. session 10: the wide model (zoo/mlpf-v6-recipe.sh, then configs/zoo/mlpf-gnnlsh-w192-jet.yaml), the jet term
#    weighted by jet pT (configs/zoo/mlpf-gnnlsh-jet.yaml --set loss.jet_pt_power=1.0 --set
#    output_dir=runs/v10/jet1d-pt1) and the transformer's candidate that became release 5 (zoo/mlpf-v8-recipe.sh),
#    on the calibration sample with massless decoding, against release 4's runs.
if [ -d runs/v10 ]; then
  args=()
  for r in v9/jet1d v10/w192-jet v10/jet1d-pt1 v7/mlpf-transformer v10/transformer-jet1pt; do
    [ -d "runs/$r" ] && args+=(--snapshot "runs/$r/last.pt" --config "runs/$r/config.yaml")
  done
  $PY -m hepzoo.validation.diagnosis --events data/v2/ttbar_calib.root -n 2000 "${args[@]}" \
    --decoding massless_clusters=true --json "$OUT/ablation_v10.json" | tee "$OUT/ablation_v10.md"
fi
# 12. session 11: (a) the newest releases on the large held-out samples (ttbar seed 303, 10 000 events; QCD pT-hat > 50
#    GeV seed 304, 5 000 events; sizes fixed in zoo/mlpf-v2-data.sh before any model was measured on them);
#    (b) release 5's transformer fine-tune continued 1500 steps (configs/zoo/mlpf-transformer-jet3.yaml) and the
#    same with jet_pt_power 2 (configs/zoo/mlpf-transformer-jet3-pt2.yaml), on both calibration samples.
for m in mlpf-gnnlsh/4 mlpf-transformer/5; do
  for sample in ttbar_test_large qcd50_test_large; do
    [ -f "data/v2/$sample.root" ] && $HEPZOO validate "zoo/$m" --data "data/v2/$sample.root" --no-gate \
      --out "$OUT/${m/\//-}-$sample" >/dev/null
  done
done
if [ -d runs/v11 ]; then
  for sample in ttbar_calib:2000 qcd50_calib:1000; do
    args=(--snapshot zoo/mlpf-transformer/5/weights.pt --config configs/zoo/mlpf-transformer-jet2.yaml)
    for r in transformer-jet1pt-cont transformer-jet1pt2-cont; do
      [ -d "runs/v11/$r" ] && args+=(--snapshot "runs/v11/$r/last.pt" --config "runs/v11/$r/config.yaml")
    done
    $PY -m hepzoo.validation.diagnosis --events "data/v2/${sample%%:*}.root" -n "${sample##*:}" "${args[@]}" \
      --decoding massless_clusters=true --json "$OUT/ablation_v11_${sample%%:*}.json" | tee "$OUT/ablation_v11_${sample%%:*}.md"
  done
fi
