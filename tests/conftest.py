"""Shared test fixtures. Test modules import nothing from each other: what several of them use lives here, the
plain functions below handed out by the factory fixtures at the end (e.g. ``def test_x(make_events): ...``)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from hepzoo.datasets import io, schema

CI_SAMPLE_EVENTS = 200
CI_SAMPLE_SEED = 20261122


@pytest.fixture(scope="session")
def ci_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded ttbar sample (Pythia8 + detector simulation + PF + targets), generated once per session; its
    seed differs from every sample the zoo releases were trained, selected or gated on."""
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    path = tmp_path_factory.mktemp("physics") / "ttbar_ci.root"
    config = GenerationConfig(SourceSpec("ttbar"), n_events=CI_SAMPLE_EVENTS, seed=CI_SAMPLE_SEED, chunk_size=50)
    assert generate(config, path, workers=2, progress=False) == CI_SAMPLE_EVENTS
    return path


# ---- runtime inputs: element rows and events of given sizes ------------------------------------------------


EF = schema.ElementFeature


def _features(counts, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plausible element rows (tracks then clusters) for events with the given element counts."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    x = np.zeros((n, len(EF)), np.float32)
    x[:, EF.TYPE] = rng.integers(1, 4, n)
    x[:, EF.PT] = rng.exponential(3.0, n) + 0.2
    x[:, EF.ETA] = rng.uniform(-3, 3, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    x[:, EF.SIN_PHI], x[:, EF.COS_PHI] = np.sin(phi), np.cos(phi)
    x[:, EF.E] = x[:, EF.PT] * np.cosh(x[:, EF.ETA])
    trk = x[:, EF.TYPE] == schema.ElementType.TRACK
    x[trk, EF.CHARGE] = rng.choice([-1.0, 1.0], int(trk.sum()))
    x[trk, EF.N_HITS] = rng.integers(5, 15, int(trk.sum()))
    x[~trk, EF.E_ECAL] = x[~trk, EF.E] * 0.7
    x[~trk, EF.E_HCAL] = x[~trk, EF.E] * 0.3
    x[~trk, EF.N_CELLS] = rng.integers(1, 20, int((~trk).sum()))
    return x, offsets


def _events(counts_trk, counts_clu, seed=0) -> ak.Array:
    """Schema-conforming events with the given track and cluster counts (floats |normal| + 0.5, integers 1)."""
    rng = np.random.default_rng(seed)
    evs = []
    for i, (nt, nc) in enumerate(zip(counts_trk, counts_clu, strict=True)):
        ev = {"event_id": i, "process": 1, "n_pileup": 0, "weight": 1.0, "seed": seed}
        for prefix, k in {"gen": 0, "trk": nt, "clu": nc, "tgt": nt + nc}.items():
            for f in schema.COLLECTIONS[prefix].fields:
                dt = np.dtype(f.dtype)
                v = np.abs(rng.normal(size=k)) + 0.5 if dt.kind == "f" else np.ones(k)
                ev[schema.COLLECTIONS[prefix].branch(f.name)] = v.astype(dt)
        ev["clu_layer"] = rng.integers(1, 4, size=nc).astype(np.int32)
        evs.append(ev)
    return io.events_to_awkward(evs)


def _policy_events(counts_trk, counts_clu, seed=0):
    """``_events`` with their angles wrapped into [-pi, pi] (hepzoo run checks the value policy)."""
    events = _events(counts_trk, counts_clu, seed)
    for prefix, fields in {"trk": ("phi", "phi_calo"), "clu": ("phi",)}.items():
        coll = events[prefix]
        for f in fields:
            coll = ak.with_field(coll, (coll[f] + np.pi) % (2 * np.pi) - np.pi, f)
        events = ak.with_field(events, coll, prefix)
    return events


# ---- factory fixtures: each hands out one of the functions above --------------------------------------------


@pytest.fixture(scope="session")
def make_features():
    """``make_features(counts, seed=0) -> (x, offsets)``: plausible element rows for the given element counts."""
    return _features


@pytest.fixture(scope="session")
def make_events():
    """``make_events(counts_trk, counts_clu, seed=0) -> ak.Array``: events of the given track/cluster counts."""
    return _events


@pytest.fixture(scope="session")
def make_policy_events():
    """``make_policy_events(counts_trk, counts_clu, seed=0)``: make_events' events with their angles in [-pi, pi]
    (within the value policy hepzoo run checks)."""
    return _policy_events
