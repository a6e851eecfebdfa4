"""particleflow's MLPF behind the zoo interface (hepzoo.particleflow_adapter): what the adapter translates."""

from __future__ import annotations

import pytest
import torch

from hepzoo.benchmarks import reference as bench_reference
from hepzoo.datasets.schema import ElementFeature as EF
from hepzoo.datasets.schema import ElementType as ET
from hepzoo.datasets.schema import TargetClass as TC
from hepzoo.datasets.schema import TargetFeature as TF
from hepzoo.models.mlpf_common import make_mlpf_inputs
from hepzoo.training.losses import mlpf_loss

pytestmark = pytest.mark.skipif(
    not bench_reference.available()[0], reason="particleflow not installed (make bench installs it)"
)
KWARGS = {"reference": "mlpf-gnnlsh", "width": 16, "num_layers": 1, "bin_size": 32, "dist_dim": 4}


def _model():
    from hepzoo.particleflow_adapter import particleflow_mlpf

    return particleflow_mlpf(**KWARGS)


def test_outputs_follow_the_zoo_interface():
    model = _model().eval()
    assert model.element_granularity == 32
    assert type(model.net).__module__ == "mlpf.model.mlpf"  # particleflow's own class, not a copy
    x = make_mlpf_inputs(2, 64, seed=2)
    with torch.no_grad():
        cls_logits, charge_logits, regression = model(x["features"], x["mask"])
    m = x["mask"]
    assert cls_logits.shape == (2, 64, len(TC)) and regression.shape == (2, 64, 5)
    # joint log-probabilities: they normalise
    torch.testing.assert_close(cls_logits[m].exp().sum(-1), torch.ones(int(m.sum())))
    # charge: the measured track charge, clusters neutral
    q = charge_logits.argmax(-1) - 1
    feats = x["features"]
    is_track = (feats[..., EF.TYPE] == float(ET.TRACK)) & m
    assert torch.equal(q[is_track], feats[..., EF.CHARGE][is_track].long())
    assert bool((q[~is_track & m] == 0).all())
    # pT and E are positive multiples of the element's own
    assert bool((regression[m][:, 0] > 0).all()) and bool((regression[m][:, 4] > 0).all())


def test_it_trains_through_the_zoo_loss():
    torch.manual_seed(0)
    model = _model().train()
    x = make_mlpf_inputs(4, 64, seed=5)
    target_cls = torch.where(
        x["features"][..., EF.TYPE] == float(ET.TRACK), int(TC.CHARGED_HADRON), int(TC.PHOTON)
    ) * x["mask"]
    target_reg = torch.zeros(4, 64, len(TF))
    for t, f in ((TF.CHARGE, EF.CHARGE), (TF.PT, EF.PT), (TF.ETA, EF.ETA), (TF.SIN_PHI, EF.SIN_PHI),
                 (TF.COS_PHI, EF.COS_PHI), (TF.E, EF.E)):  # fmt: skip
        target_reg[..., t] = x["features"][..., f]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(x["features"], x["mask"])
        loss = mlpf_loss(*out, target_cls, target_reg, x["mask"])["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
