"""The jet-level MLPF loss term: slot-to-jet assignment, hand-computed values, gradients, and a training run."""

from __future__ import annotations

import json
import math

import awkward as ak
import numpy as np
import pytest
import torch
import yaml

from hepzoo.datasets import schema
from hepzoo.datasets.dtypes import SchemaError
from hepzoo.datasets.jet_assign import element_jet_index
from hepzoo.datasets.loader import MLPFDataset
from hepzoo.training.cli import train_command
from hepzoo.training.jet_loss import jet_loss_sum
from hepzoo.training.losses import loss_counts, mlpf_loss

EF, TC, TF = schema.ElementFeature, schema.TargetClass, schema.TargetFeature
N_CLS = len(TC)


def _flat_rows(rows: list[tuple[float, float, int, float, float]]):
    """rows of (element eta, element phi, target class, target eta, target phi) -> features, cls, reg."""
    n = len(rows)
    x = np.zeros((n, len(EF)), np.float32)
    reg = np.zeros((n, len(TF)), np.float32)
    cls = np.array([r[2] for r in rows], np.int64)
    for i, (eta, phi, _, teta, tphi) in enumerate(rows):
        x[i, EF.ETA], x[i, EF.SIN_PHI], x[i, EF.COS_PHI] = eta, math.sin(phi), math.cos(phi)
        reg[i, TF.ETA], reg[i, TF.SIN_PHI], reg[i, TF.COS_PHI] = teta, math.sin(tphi), math.cos(tphi)
    return x, cls, reg


def test_element_jet_index_hand_cases():
    jets = ak.Array({"genjet": [
        [{"pt": 50.0, "eta": 0.0, "phi": 3.1}, {"pt": 10.0, "eta": 1.0, "phi": 0.0}, {"pt": 30.0, "eta": 1.0, "phi": 1.0}],
        [{"pt": 40.0, "eta": 2.7, "phi": 0.0}, {"pt": 40.0, "eta": -1.0, "phi": -1.0}],
    ]})  # fmt: skip
    rows = [
        (0.0, -3.1, int(TC.NONE), 9.0, 9.0),  # no target: element direction, across phi = pi -> jet 1
        (5.0, 5.0, int(TC.PHOTON), 1.0, 0.9),  # target direction near jet 3 (jet 2 is below 20 GeV)
        (1.0, 0.0, int(TC.NONE), 0.0, 0.0),  # only near the 10 GeV jet -> none
        (0.0, 3.1, int(TC.CHARGED_HADRON), 0.0, 1.5),  # its target is far from every jet -> none
        (2.7, 0.0, int(TC.NEUTRAL_HADRON), 2.7, 0.0),  # jet at |eta| 2.7 is outside the selection -> none
        (-1.1, -1.1, int(TC.NONE), 0.0, 0.0),  # event 2, jet 2
    ]
    x, cls, reg = _flat_rows(rows)
    idx = element_jet_index(jets, x, cls, reg, np.array([0, 4, 6]))
    assert idx.tolist() == [1, 3, 0, 0, 0, 2]
    with pytest.raises(SchemaError, match="genjet"):
        element_jet_index(ak.Array({"trk": [[], []]}), x, cls, reg, np.array([0, 4, 6]))


def _jet_batch(pred_scale: float = 1.0):
    """B=1, N=4: three slots of jet 1 (charged hadron 30 GeV, photon 10 GeV, neutral hadron 20 GeV, all at phi 0)
    and one padded slot full of NaN."""
    target_cls = torch.tensor([[int(TC.CHARGED_HADRON), int(TC.PHOTON), int(TC.NEUTRAL_HADRON), 0]])
    target_reg = torch.zeros(1, 4, len(TF))
    target_reg[0, :3, TF.PT] = torch.tensor([30.0, 10.0, 20.0])
    target_reg[0, :3, TF.COS_PHI] = 1.0
    regression = torch.zeros(1, 4, 5)
    regression[0, :3, 0] = target_reg[0, :3, TF.PT] * pred_scale
    regression[0, :3, 3] = 1.0
    regression[0, 3] = float("nan")
    logits = torch.full((1, 4, N_CLS), -5.0)
    for i in range(3):
        logits[0, i, int(target_cls[0, i])] = 5.0
    logits[0, 3] = float("nan")
    mask = torch.tensor([[True, True, True, False]])
    jet_index = torch.tensor([[1, 1, 1, 0]])
    return logits, regression, target_cls, target_reg, jet_index, mask


def test_jet_loss_hand_values():
    b = _jet_batch()
    assert jet_loss_sum(*b).item() == pytest.approx(0.5 * (math.log(60.001 / 60.0) / 0.1) ** 2, abs=1e-6)
    r = math.log((66.0 + 1e-3) / 60.0) / 0.1  # 10 % high: quadratic part of the Huber (|r| < 1)
    assert jet_loss_sum(*_jet_batch(1.1)).item() == pytest.approx(0.5 * r * r, rel=1e-5)
    r = math.log((90.0 + 1e-3) / 60.0) / 0.1  # 50 % high: linear part
    assert jet_loss_sum(*_jet_batch(1.5)).item() == pytest.approx(r - 0.5, rel=1e-5)
    # a slot decoded as NONE drops out of the sum: 40 of 60 GeV
    logits, reg, tcls, treg, jet, mask = _jet_batch()
    logits[0, 2, int(TC.NONE)] = 10.0
    r = math.log((40.0 + 1e-3) / 60.0) / 0.1
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask).item() == pytest.approx(-r - 0.5, rel=1e-5)
    # scale: the same ratio over 0.2
    r = math.log((66.0 + 1e-3) / 60.0) / 0.2
    assert jet_loss_sum(*_jet_batch(1.1), scale=0.2).item() == pytest.approx(0.5 * r * r, rel=1e-5)


def test_jet_pt_power_weights_each_jet_by_its_target_pt():
    """Two jets of one event: jet 1 = the 60 GeV jet of _jet_batch at +10 %, jet 2 = one 120 GeV photon at -20 %."""
    logits, reg, tcls, treg, jet, mask = _jet_batch(1.1)
    mask[0, 3] = True
    jet[0, 3] = 2
    tcls[0, 3] = int(TC.PHOTON)
    treg[0, 3] = 0.0
    treg[0, 3, TF.PT], treg[0, 3, TF.COS_PHI] = 120.0, 1.0
    reg[0, 3] = 0.0
    reg[0, 3, 0], reg[0, 3, 3] = 96.0, 1.0
    logits[0, 3] = -5.0
    logits[0, 3, int(TC.PHOTON)] = 5.0
    r1 = math.log((66.0 + 1e-3) / 60.0) / 0.1  # quadratic part of the Huber
    r2 = math.log((96.0 + 1e-3) / 120.0) / 0.1  # linear part
    h1, h2 = 0.5 * r1 * r1, abs(r2) - 0.5
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask).item() == pytest.approx(h1 + h2, rel=1e-5)
    w1, w2 = 60.0 / 20.0, 120.0 / 20.0
    got = jet_loss_sum(logits, reg, tcls, treg, jet, mask, pt_power=1.0).item()
    assert got == pytest.approx(w1 * h1 + w2 * h2, rel=1e-5)
    assert loss_counts(tcls, mask, treg, jet, jet_pt_power=1.0)[3].item() == pytest.approx(w1 + w2, rel=1e-6)
    assert loss_counts(tcls, mask, treg, jet, jet_pt_power=2.0)[3].item() == pytest.approx(w1**2 + w2**2, rel=1e-6)
    # the loss is the weighted mean over jets
    charge = torch.zeros(1, 4, 3)
    out = mlpf_loss(logits, charge, reg, tcls, treg, mask, jet_index=jet, jet_weight=1.0, jet_pt_power=1.0)
    assert out["jet"].item() == pytest.approx((w1 * h1 + w2 * h2) / (w1 + w2), rel=1e-5)
    # vector mode (all slots at eta 0, phi 0: only the parallel part is off, +0.1 / 0.1 and -0.2 / 0.1)
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask, vector=True).item() == pytest.approx(0.5 + 1.5, rel=1e-5)
    got = jet_loss_sum(logits, reg, tcls, treg, jet, mask, vector=True, pt_power=1.0).item()
    assert got == pytest.approx(w1 * 0.5 + w2 * 1.5, rel=1e-5)
    with pytest.raises(ValueError, match="pt_power"):
        jet_loss_sum(logits, reg, tcls, treg, jet, mask, pt_power=-1.0)


def test_jet_loss_gradients_reach_regression_and_class():
    logits, reg, tcls, treg, jet, mask = _jet_batch(0.8)  # jets 20 % low
    logits[0, 2, int(TC.NONE)] = 4.9  # still decoded a neutral hadron, but barely
    # the photon at phi = 0.5 (prediction and target): directions now change the vector sum
    reg[0, 1, 2], reg[0, 1, 3] = math.sin(0.5), math.cos(0.5)
    treg[0, 1, TF.SIN_PHI], treg[0, 1, TF.COS_PHI] = math.sin(0.5), math.cos(0.5)
    logits.requires_grad_(True)
    reg.requires_grad_(True)
    jet_loss_sum(logits, reg, tcls, treg, jet, mask).backward()
    assert (reg.grad[0, :3, 0] < 0).all()  # raise every counted pT
    assert (reg.grad[0, :, 1:] == 0).all()  # never move eta or the direction
    assert logits.grad[0, 2, int(TC.NONE)] > 0  # make NONE less likely (straight-through gradient of 1 - p_NONE)
    assert torch.isfinite(logits.grad[0, :3]).all() and (logits.grad[0, 3] == 0).all()
    # regression only: the same regression gradient, none for the classes
    reg_grad = reg.grad.clone()
    logits.grad, reg.grad = None, None
    jet_loss_sum(logits, reg, tcls, treg, jet, mask, class_gradient=False).backward()
    torch.testing.assert_close(reg.grad, reg_grad)
    assert logits.grad is None or (logits.grad == 0).all()


def test_mlpf_loss_jet_component_and_counts():
    logits, reg, tcls, treg, jet, mask = _jet_batch(1.1)
    charge = torch.zeros(1, 4, 3)
    counts = loss_counts(tcls, mask, treg, jet)
    assert counts.tolist() == [3.0, 1.0, 3.0, 1.0]
    off = mlpf_loss(logits, charge, reg, tcls, treg, mask)
    on = mlpf_loss(logits, charge, reg, tcls, treg, mask, jet_index=jet, jet_weight=2.0)
    assert off["jet"].item() == 0.0 and on["jet"].item() == pytest.approx(jet_loss_sum(logits, reg, tcls, treg, jet, mask).item())
    assert on["total"].item() == pytest.approx(off["total"].item() + 2.0 * on["jet"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="jet_index"):
        mlpf_loss(logits, charge, reg, tcls, treg, mask, jet_weight=1.0)
    # jets whose target sum is below 5 GeV are not counted
    treg[0, :3, TF.PT] = 1.0
    assert loss_counts(tcls, mask, treg, jet).tolist()[3] == 0.0


def test_dataset_jet_index_and_training_with_jet_term(tmp_path, synthetic_events, write_events, make_raw_config):
    write_events(tmp_path / "train.root", synthetic_events(24, seed=1))
    write_events(tmp_path / "val.root", synthetic_events(8, seed=2, first_id=1000))
    batches = list(MLPFDataset(tmp_path / "train.root", step_size=8, batch_size=4, buckets=[8, 16], jets=True))
    assert all("jet_index" in b for b in batches)
    for b in batches:
        assert (b["jet_index"][~b["mask"]] == 0).all() and b["jet_index"].max() <= 2
    assert sum(int((b["jet_index"] > 0).sum()) for b in batches) > 0
    assert all("jet_index" not in b for b in MLPFDataset(tmp_path / "train.root", step_size=8, batch_size=4, buckets=[8, 16]))

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(make_raw_config(tmp_path, loss={"jet_weight": 0.5})))
    train_command(cfg, [])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in rows if "val" in r]
    assert vals and all(v["jet"] > 0 and math.isfinite(v["jet"]) for v in vals)
    v = vals[-1]
    element_total = v["cls"] + v["charge"] + v["reg"]
    assert v["total"] == pytest.approx(element_total + 0.5 * v["jet"], rel=1e-6)


def test_vector_jet_loss_hand_values_and_axis():
    """vector=True: parallel, perpendicular and eta parts of the jet sum, each relative to the target, over scale."""
    assert jet_loss_sum(*_jet_batch(1.1), vector=True).item() == pytest.approx(0.5 * 1.0**2, rel=1e-5)
    logits, reg, tcls, treg, jet, mask = _jet_batch()
    reg[0, 1, 2], reg[0, 1, 3] = math.sin(0.5), math.cos(0.5)  # the photon predicted 0.5 rad off in phi
    par = 10.0 * (math.cos(0.5) - 1.0) / 60.0 / 0.1
    perp = 10.0 * math.sin(0.5) / 60.0 / 0.1
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask, vector=True).item() == pytest.approx(
        0.5 * par**2 + 0.5 * perp**2, rel=1e-5
    )
    mag = math.hypot(50.0 + 10.0 * math.cos(0.5), 10.0 * math.sin(0.5))  # the magnitude sees only the length
    r = math.log((mag + 1e-3) / 60.0) / 0.1
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask).item() == pytest.approx(0.5 * r * r, rel=1e-4)
    # eta: the neutral hadron (20 of 60 GeV) predicted at eta 0.3 moves the pT-weighted eta by 0.1
    logits, reg, tcls, treg, jet, mask = _jet_batch()
    reg[0, 2, 1] = 0.3
    assert jet_loss_sum(logits, reg, tcls, treg, jet, mask, vector=True).item() == pytest.approx(0.5, rel=1e-5)
    # the axis parts move pT only: more pT on the displaced photon is penalised
    logits, reg, tcls, treg, jet, mask = _jet_batch()
    reg[0, 1, 2], reg[0, 1, 3] = math.sin(0.5), math.cos(0.5)
    reg.requires_grad_(True)
    jet_loss_sum(logits, reg, tcls, treg, jet, mask, vector=True).backward()
    assert reg.grad[0, 1, 0] > 0 and (reg.grad[0, :, 1:] == 0).all()
