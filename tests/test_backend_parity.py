"""Every released model on every backend available here vs its PyTorch model (registry-driven: a new release
or a new backend is covered without new test code), plus the runtime's documented behaviour on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hepzoo.export.zoo import list_releases
from hepzoo.models import get_spec
from hepzoo.runtime import Session, available_backends

RELEASES = [r for r in list_releases() if (r.path / "card.json").is_file()]
BACKENDS = available_backends()
# (batch, elements) sizes that are not the export's dummy size; MLPF sizes are multiples of the granularity
SIZES = {"mlpf": [(1, 128), (2, 320)], "flashsim": [(1, 0), (37, 0)]}


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def release(request):
    return request.param, request.param.build_model()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_pytorch(release, backend):
    rel, model = release
    sess = Session.load(rel.path, backend=backend)
    spec = get_spec(rel.config["model"]["name"])
    tol = sess.card.tolerance
    for batch, n in SIZES[spec.family]:
        inputs = spec.make_inputs(batch, n, seed=batch + n)
        with torch.no_grad():
            ref = model(*inputs.values())
        got = sess.backend.run({k: v.numpy() for k, v in inputs.items()})
        mask = inputs["mask"].numpy() if "mask" in inputs else None
        for out_spec, r in zip(spec.outputs, ref, strict=True):
            r, g = r.numpy(), got[out_spec.name]
            assert g.shape == r.shape, (out_spec.name, g.shape, r.shape)
            if mask is not None:  # padded positions are undefined
                r, g = r[mask], g[mask]
            np.testing.assert_allclose(g, r, atol=tol.atol, rtol=tol.rtol, err_msg=f"{backend} {out_spec.name} {batch}x{n}")


def test_bad_inputs_give_clear_errors():
    mlpf = Session.load("mlpf-gnnlsh")
    x = np.ones((10, 20), np.float32)
    with pytest.raises(ValueError, match=r"features must be \[N, 20\], got shape \(10, 19\)"):
        mlpf.run_elements(x[:, :19], np.array([0, 10]))
    x[4, 15] = np.inf
    with pytest.raises(ValueError, match=r"event 1: element 1 has a non-finite value inf in feature 'e_ecal'"):
        mlpf.run_elements(x, np.array([0, 3, 10]))
    with pytest.raises(ValueError, match="offsets"):
        mlpf.run_elements(x, np.array([0, 11]))
    # zero events and empty events: empty outputs of the card's shapes, no error
    none = mlpf.run_elements(np.zeros((0, 20), np.float32), np.array([0]))
    assert {k: v.shape for k, v in none.items()} == {"cls_logits": (0, 6), "charge_logits": (0, 3), "regression": (0, 5)}
    empty = mlpf.run_elements(np.zeros((0, 20), np.float32), np.array([0, 0, 0]))
    assert empty["regression"].shape == (0, 5)
    flash = Session.load("flashsim-jet")
    with pytest.raises(ValueError, match=r"'context'.*\[N, 12\].*\(3, 11\)"):
        flash.sample(np.zeros((3, 11), np.float32), seed=1)
    ctx = np.zeros((3, 12), np.float32)
    ctx[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 2 has a non-finite value nan in 'log_pt'"):
        flash.sample(ctx, seed=1)
    assert flash.sample(np.zeros((0, 12), np.float32), seed=1)["sample"].shape == (0, 5)
