"""Flash-sim object tables (jets, tracks) and their streaming dataset."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch

from hepzoo.datasets import flashsim_data as fd
from hepzoo.datasets.flashsim_loader import FlashSimDataset
from hepzoo.datasets import io, schema

JC, JT, TC, TT = fd.JetContext, fd.JetTarget, fd.TrackContext, fd.TrackTarget


def _coll(prefix: str, rows: list[dict]) -> dict[str, np.ndarray]:
    """Branches of one collection from per-object dicts; missing fields are 0."""
    coll = schema.COLLECTIONS[prefix]
    return {coll.branch(f.name): np.array([r.get(f.name, 0) for r in rows], dtype=f.dtype) for f in coll.fields}


def tiny_events() -> list[dict]:
    """Three hand-made events (see the expectations in the tests)."""
    gen0 = [
        dict(pid=211, charge=1, pt=9.0, e=10.0, eta=0.5, phi=0.1, vz=1.0),  # 0: charged hadron, in j0
        dict(pid=22, pt=4.0, e=5.0, eta=0.6, phi=0.2),  # 1: photon, dR 0.141
        dict(pid=130, pt=2.5, e=3.0, eta=0.3, phi=0.1),  # 2: neutral hadron, dR 0.2
        dict(pid=13, charge=-1, pt=1.9, e=2.0, eta=0.5, phi=-0.1, vz=-2.0),  # 3: muon (lepton), dR 0.2
        dict(pid=12, pt=90.0, e=100.0, eta=0.5, phi=0.1),  # 4: neutrino: invisible
        dict(pid=211, charge=1, pt=40.0, e=50.0, eta=0.5, phi=0.1, is_pu=True, vz=30.0),  # 5: pile-up
        dict(pid=-211, charge=-1, pt=6.0, e=7.0, eta=0.5, phi=0.6),  # 6: outside the cone (dR 0.5)
        dict(pid=22, pt=3.0, e=4.0, eta=-1.0, phi=-3.1),  # 7: photon in j3 (across the phi wrap)
        dict(pid=11, charge=-1, pt=0.1, e=0.1, eta=0.0, phi=0.0),  # 8: electron below the track pT cut
        dict(pid=-11, charge=1, pt=3.0, e=3.0, eta=2.7, phi=0.0),  # 9: positron outside the track eta cut
        dict(pid=11, charge=-1, pt=5.0, e=5.0, eta=1.0, phi=1.0, vx=3.0, vy=4.0, vz=10.0),  # 10: electron
    ]
    ev0 = {
        "event_id": 10, "n_pileup": 3,
        **_coll("gen", gen0),
        **_coll("genjet", [
            dict(pt=50.0, eta=0.5, phi=0.1, m=8.0, n_const=12),  # j0: selected
            dict(pt=10.0, eta=0.0, phi=1.0, m=1.0, n_const=3),  # below 15 GeV
            dict(pt=30.0, eta=3.0, phi=1.0, m=2.0, n_const=4),  # outside |eta| < 2.5
            dict(pt=20.0, eta=-1.0, phi=3.1, m=3.0, n_const=5),  # j3: selected
        ]),
        **_coll("recojet", [
            dict(pt=45.0, eta=0.55, phi=0.05, m=9.0, n_const=10),  # dR(j0) = 0.0707: the match
            dict(pt=48.0, eta=0.5, phi=0.25, m=7.0, n_const=11),  # dR(j0) = 0.15: farther
            dict(pt=22.0, eta=-1.05, phi=-3.1, m=2.5, n_const=6),  # dR(j3) = 0.097 across the wrap
        ]),
        **_coll("trk", [
            dict(gen_idx=3, pt=2.0, eta=0.51, phi=-0.09, d0=0.01, z0=-1.5),  # muon
            dict(gen_idx=0, pt=9.9, eta=0.49, phi=0.12, d0=-0.02, z0=1.25),  # pi+
            dict(gen_idx=-1, pt=1.0),  # fake
            dict(gen_idx=0, pt=7.0),  # second track of the pi+: ignored
            dict(gen_idx=10, pt=4.0, eta=1.0, phi=1.0 - 2e-3, d0=0.5, z0=10.5),  # electron
        ]),
    }
    ev1 = {
        "event_id": 11, "n_pileup": 0,
        **_coll("gen", [dict(pid=-211, charge=-1, pt=2.0, e=2.0, eta=0.1, phi=0.0)]),
        **_coll("genjet", [dict(pt=16.0, eta=0.0, phi=0.0, m=1.0, n_const=2)]),  # selected, no reco jet
        **_coll("recojet", []),
        **_coll("trk", [dict(gen_idx=0, pt=3.0, eta=0.1, phi=0.0)]),  # index relative to its event
    }
    ev2 = {
        "event_id": 12, "n_pileup": 1,
        **_coll("gen", []), **_coll("genjet", []),
        **_coll("recojet", [dict(pt=30.0, eta=0.0, phi=0.0, m=3.0, n_const=4)]),
        **_coll("trk", [dict(gen_idx=5, pt=1.0)]),  # points past the event's particles: ignored
    }
    for e in (ev0, ev1, ev2):
        e.update(process=1, weight=1.0, seed=0)
    return [ev0, ev1, ev2]


def test_feature_names_follow_enums():
    assert fd.JET_CONTEXT_NAMES[JC.FRAC_PHOTON] == "frac_photon" and len(fd.JET_CONTEXT_NAMES) == len(JC)
    assert fd.TRACK_TARGET_NAMES == ("pt_ratio", "deta", "dphi", "d0", "dz0")
    assert fd.JET_DISCRETE_TARGETS == (JT.N_CONST,)


def test_jet_table_tiny():
    t = fd.jet_table(io.events_to_awkward(tiny_events()))
    assert t["context"].dtype == np.float32 and t["target"].dtype == np.float32
    assert t["matched"].dtype == bool and t["event_index"].dtype == np.int64
    assert t["context"].shape == (3, len(JC)) and t["target"].shape == (3, len(JT))
    np.testing.assert_array_equal(t["event_index"], [0, 0, 1])
    np.testing.assert_array_equal(t["matched"], [True, True, False])
    c = t["context"]
    np.testing.assert_allclose(c[:, JC.LOG_PT], np.log([50.0, 20.0, 16.0]), rtol=1e-6)
    np.testing.assert_allclose(c[:, JC.ETA], [0.5, -1.0, 0.0])
    np.testing.assert_allclose(c[:, JC.SIN_PHI], np.sin([0.1, 3.1, 0.0]), atol=1e-6)
    np.testing.assert_allclose(c[:, JC.COS_PHI], np.cos([0.1, 3.1, 0.0]), atol=1e-6)
    np.testing.assert_allclose(c[:, JC.MASS], [8.0, 3.0, 1.0])
    np.testing.assert_allclose(c[:, JC.N_CONST], [12, 5, 2])
    np.testing.assert_allclose(c[:, JC.N_PILEUP], [3, 3, 0])
    np.testing.assert_allclose(c[:, JC.N_GENJETS], [2, 2, 1])
    fracs = [JC.FRAC_CHARGED_HADRON, JC.FRAC_PHOTON, JC.FRAC_NEUTRAL_HADRON, JC.FRAC_LEPTON]
    # j0: 10 (pi+) + 5 (photon) + 3 (K_L) + 2 (muon) = 20 GeV; neutrino, pile-up and the far pion excluded
    np.testing.assert_allclose(c[:, fracs], [[0.5, 0.25, 0.15, 0.1], [0, 1, 0, 0], [1, 0, 0, 0]], atol=1e-6)
    dphi_j3 = (-3.1 - 3.1) + 2 * math.pi
    np.testing.assert_allclose(
        t["target"],
        [[0.9, 0.05, -0.05, 9.0, 10.0], [1.1, -0.05, dphi_j3, 2.5, 6.0], [0, 0, 0, 0, 0]],
        atol=2e-6,
    )


def test_track_table_tiny():
    evs = tiny_events()
    t = fd.track_table(io.events_to_awkward(evs))
    # selected: event 0 particles 0, 3, 5 (pile-up kept), 6, 10; event 1 particle 0
    np.testing.assert_array_equal(t["event_index"], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(t["matched"], [True, True, False, False, True, True])
    c = t["context"]
    np.testing.assert_allclose(c[:, TC.LOG_PT], np.log([9.0, 1.9, 40.0, 6.0, 5.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(c[:, TC.CHARGE], [1, -1, 1, -1, -1, -1])
    np.testing.assert_array_equal(c[:, TC.IS_ELECTRON], [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(c[:, TC.IS_MUON], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(c[:, TC.IS_HADRON], [1, 0, 1, 1, 0, 1])
    np.testing.assert_allclose(c[:, TC.VZ], [1.0, -2.0, 30.0, 0.0, 10.0, 0.0])
    np.testing.assert_allclose(c[:, TC.VR], [0, 0, 0, 0, 5.0, 0])
    expect = np.zeros((6, len(TT)), np.float32)
    expect[0] = [9.9 / 9.0, -0.01, 0.02, -0.02, 0.25]  # pi+ -> track 1 (not the later track 3)
    expect[1] = [2.0 / 1.9, 0.01, 0.01, 0.01, 0.5]  # muon -> track 0
    expect[4] = [0.8, 0.0, -2e-3, 0.5, 0.5]  # electron -> track 4
    expect[5] = [1.5, 0.0, 0.0, 0.0, 0.0]  # event 1: gen_idx is relative to the event
    np.testing.assert_allclose(t["target"], expect, atol=2e-6)


def test_empty_chunk_and_missing_collection():
    chunk = io.events_to_awkward(tiny_events())[2:]  # an event without gen jets and gen particles
    for fn in (fd.jet_table, fd.track_table):
        t = fn(chunk)
        assert t["context"].shape[0] == t["target"].shape[0] == t["matched"].shape[0] == 0
    with pytest.raises(io.SchemaError, match="no 'genjet' collection"):
        fd.jet_table(chunk[["gen", "recojet"]])


def test_tables_without_reco_collections_give_context_only():
    """Generator-level files (the input of a flash-sim run): same context, nothing matched."""
    chunk = io.events_to_awkward(tiny_events())
    for fn, keep in ((fd.jet_table, ["n_pileup", "gen", "genjet"]), (fd.track_table, ["n_pileup", "gen"])):
        full, context_only = fn(chunk), fn(chunk[keep])
        np.testing.assert_array_equal(context_only["context"], full["context"])
        np.testing.assert_array_equal(context_only["event_index"], full["event_index"])
        assert not context_only["matched"].any() and full["matched"].any()


def _write(path, evs, cuts):
    chunk = io.events_to_awkward(evs)
    with io.EventWriter(path) as w:
        for a, b in zip(cuts[:-1], cuts[1:]):
            w.write(chunk[a:b])


def _rows(batches) -> np.ndarray:
    return np.concatenate(
        [np.concatenate([b["context"], b["matched"][:, None].float(), b["target"]], axis=1) for b in batches]
    )


@pytest.mark.parametrize("kind", list(fd.KINDS))
def test_dataset_matches_table_and_shuffles(tmp_path, kind):
    evs = tiny_events() * 4
    for i, e in enumerate(evs):
        e = dict(e, event_id=100 + i)
        evs[i] = e
    _write(tmp_path / "a.root", evs[:7], [0, 7])
    _write(tmp_path / "b.root", evs[7:], [0, 5])
    table_fn = fd.KINDS[kind][0]
    full = table_fn(io.events_to_awkward(evs))
    ref = np.concatenate([full["context"], full["matched"][:, None], full["target"]], axis=1)
    ds = FlashSimDataset(str(tmp_path / "*.root"), kind, step_size=2, batch_size=3)
    batches = list(ds)
    for b in batches:
        assert b["context"].dtype == torch.float32 and b["matched"].dtype == torch.bool
        assert b["target"].dtype == torch.float32 and len(b["matched"]) <= 3
        assert b["context"].shape[1] == len(fd.KINDS[kind].context_names)
    np.testing.assert_array_equal(_rows(batches), ref)  # in order, without shuffling

    sh = FlashSimDataset(str(tmp_path / "*.root"), kind, step_size=2, batch_size=3, shuffle=True, seed=7)
    a, a2 = _rows(list(sh)), _rows(list(sh))
    sh.set_epoch(1)
    b = _rows(list(sh))
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b) and not np.array_equal(a, ref)

    def srt(x):
        return x[np.lexsort(x.T[::-1])]

    np.testing.assert_array_equal(srt(a), srt(ref))
    np.testing.assert_array_equal(srt(b), srt(ref))


def test_dataset_workers_shard(tmp_path):
    evs = [dict(e, event_id=100 + i) for i, e in enumerate(tiny_events() * 4)]
    _write(tmp_path / "w.root", evs, [0, 12])
    ds = FlashSimDataset(tmp_path / "w.root", "track", step_size=2, batch_size=4)
    ref = _rows(list(ds))
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = _rows(list(dl))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got[np.lexsort(got.T[::-1])], ref[np.lexsort(ref.T[::-1])])
    with pytest.raises(ValueError, match="kind must be one of"):
        FlashSimDataset(tmp_path / "w.root", "calo")


def test_tables_on_generated_events(tmp_path):
    """Real (Pythia8 + detector) events: sane values, and the vectorised matching equals a per-event loop."""
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    path = tmp_path / "ttbar.root"
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=5, seed=1), path, progress=False)
    ev = io.read_events(path)
    jets, trks = fd.jet_table(ev), fd.track_table(ev)
    for t in (jets, trks):
        assert np.isfinite(t["context"]).all() and np.isfinite(t["target"]).all()
        assert not t["target"][~t["matched"]].any()
    assert len(jets["matched"]) >= 5 and jets["matched"].mean() > 0.7
    resp = jets["target"][jets["matched"], JT.PT_RESPONSE]
    assert 0.5 < np.median(resp) < 1.5
    assert (np.abs(jets["target"][jets["matched"]][:, [JT.DETA, JT.DPHI]]) < fd.JET_MATCH_DR).all()
    fr = jets["context"][:, [JC.FRAC_CHARGED_HADRON, JC.FRAC_PHOTON, JC.FRAC_NEUTRAL_HADRON, JC.FRAC_LEPTON]]
    np.testing.assert_allclose(fr.sum(axis=1), 1.0, atol=1e-5)  # every selected jet has visible particles
    assert len(trks["matched"]) > 100 and 0.5 < trks["matched"].mean() <= 1.0
    assert np.median(trks["target"][trks["matched"], TT.PT_RATIO]) == pytest.approx(1.0, abs=0.05)
    # reference: the closest reco jet per selected gen jet, event by event
    k = 0
    for i in range(len(ev)):
        gj, rj = ev.genjet[i], ev.recojet[i]
        for j in range(len(gj)):
            if not (gj.pt[j] > fd.JET_MIN_PT and abs(gj.eta[j]) < fd.JET_MAX_ABS_ETA):
                continue
            dr = np.hypot(ak.to_numpy(rj.eta) - gj.eta[j], fd.wrap_phi(ak.to_numpy(rj.phi) - gj.phi[j]))
            assert jets["event_index"][k] == i
            assert jets["matched"][k] == bool(dr.size and dr.min() < fd.JET_MATCH_DR)
            if jets["matched"][k]:
                best = int(np.argmin(dr))
                assert jets["target"][k, JT.PT_RESPONSE] == pytest.approx(rj.pt[best] / gj.pt[j], rel=1e-5)
                assert jets["target"][k, JT.N_CONST] == rj.n_const[best]
            k += 1
    assert k == len(jets["matched"])
