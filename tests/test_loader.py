"""MLPF element features/targets and the bucketed torch loader."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch

from hepzoo.datasets import io, loader, schema
from hepzoo.datasets.ragged import OversizeEventError

EF = schema.ElementFeature
TF = schema.TargetFeature


def synthetic_events(n: int, seed: int = 0, max_trk: int = 12, max_clu: int = 12) -> list[dict]:
    """Random, consistent events: tgt element-aligned (ntrk + nclu slots), layers valid."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ntrk, nclu, ngen = (int(rng.integers(0, m + 1)) for m in (max_trk, max_clu, 10))
        if i == 0:
            ntrk = nclu = 0  # an event without elements
        ev = {"event_id": 100 + i, "process": 1, "n_pileup": 0, "weight": 1.0, "seed": seed}
        sizes = {"gen": ngen, "trk": ntrk, "clu": nclu, "tgt": ntrk + nclu}
        for p, k in sizes.items():
            for f in schema.COLLECTIONS[p].fields:
                dt = np.dtype(f.dtype)
                if dt.kind == "f":
                    v = rng.normal(size=k).astype(dt)
                elif dt.kind == "b":
                    v = rng.random(k) < 0.5
                else:
                    v = rng.integers(0, 6, size=k).astype(dt)
                ev[schema.COLLECTIONS[p].branch(f.name)] = v
        ev["clu_layer"] = rng.integers(1, 4, size=nclu).astype(np.int32)
        out.append(ev)
    return out


def _zeros(prefix: str, k: int) -> dict:
    coll = schema.COLLECTIONS[prefix]
    return {coll.branch(f.name): np.zeros(k, f.dtype) for f in coll.fields}


def tiny_events() -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """Two hand-made events and their expected element features / targets (rows: tracks then clusters)."""
    e0 = {"event_id": 7, **_zeros("trk", 1), **_zeros("clu", 1), **_zeros("tgt", 2)}
    e0.update(
        trk_pt=np.array([2.0], "f4"), trk_eta=np.array([0.5], "f4"), trk_phi=np.array([0.0], "f4"),
        trk_p=np.array([3.0], "f4"), trk_charge=np.array([-1], "i4"), trk_eta_calo=np.array([0.6], "f4"),
        trk_phi_calo=np.array([np.pi / 2], "f4"), trk_pt_err=np.array([0.1], "f4"), trk_d0=np.array([0.01], "f4"),
        trk_z0=np.array([-0.2], "f4"), trk_n_hits=np.array([12], "i4"), trk_muon_stations=np.array([2], "i4"),
        clu_layer=np.array([2], "i4"), clu_e=np.array([5.0], "f4"), clu_et=np.array([4.0], "f4"),
        clu_eta=np.array([-1.0], "f4"), clu_phi=np.array([np.pi], "f4"), clu_e_ecal=np.array([1.0], "f4"),
        clu_e_hcal=np.array([4.0], "f4"), clu_sigma_eta=np.array([0.02], "f4"),
        clu_sigma_phi=np.array([0.03], "f4"), clu_n_cells=np.array([7], "i4"),
        tgt_cls=np.array([1, 2], "i4"), tgt_charge=np.array([-1, 0], "i4"), tgt_pt=np.array([2.1, 3.9], "f4"),
        tgt_eta=np.array([0.5, -1.0], "f4"), tgt_sin_phi=np.array([0.0, 0.0], "f4"),
        tgt_cos_phi=np.array([1.0, -1.0], "f4"), tgt_e=np.array([3.1, 6.0], "f4"),
    )
    e1 = {"event_id": 8, **_zeros("trk", 0), **_zeros("clu", 3), **_zeros("tgt", 3)}
    e1.update(
        clu_layer=np.array([1, 3, 1], "i4"), clu_e=np.array([10.0, 20.0, 1.0], "f4"),
        clu_et=np.array([9.0, 2.0, 0.5], "f4"), clu_eta=np.array([0.1, 4.0, 1.2], "f4"),
        clu_phi=np.array([-np.pi / 2, 0.0, 0.0], "f4"), clu_e_ecal=np.array([10.0, 0.0, 1.0], "f4"),
        clu_n_cells=np.array([3, 1, 2], "i4"), tgt_cls=np.array([3, 0, 0], "i4"),
        tgt_pt=np.array([9.0, 0.0, 0.0], "f4"), tgt_e=np.array([10.0, 0.0, 0.0], "f4"),
    )
    x = np.zeros((5, len(EF)), np.float32)
    x[0, [EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E, EF.CHARGE, EF.ETA_CALO, EF.SIN_PHI_CALO,
          EF.COS_PHI_CALO, EF.PT_ERR, EF.D0, EF.Z0, EF.N_HITS, EF.MUON_STATIONS]] = [
        1, 2.0, 0.5, 0.0, 1.0, 3.0, -1, 0.6, 1.0, 0.0, 0.1, 0.01, -0.2, 12, 2]
    x[1, [EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E, EF.E_ECAL, EF.E_HCAL, EF.SIGMA_ETA,
          EF.SIGMA_PHI, EF.N_CELLS]] = [3, 4.0, -1.0, 0.0, -1.0, 5.0, 1.0, 4.0, 0.02, 0.03, 7]
    x[2, [EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E, EF.E_ECAL, EF.N_CELLS]] = [
        2, 9.0, 0.1, -1.0, 0.0, 10.0, 10.0, 3]
    x[3, [EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E, EF.N_CELLS]] = [4, 2.0, 4.0, 0.0, 1.0, 20.0, 1]
    x[4, [EF.TYPE, EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E, EF.E_ECAL, EF.N_CELLS]] = [
        2, 0.5, 1.2, 0.0, 1.0, 1.0, 1.0, 2]
    cls = np.array([1, 2, 3, 0, 0])
    reg = np.zeros((5, len(TF)), np.float32)
    reg[0, [TF.CHARGE, TF.PT, TF.ETA, TF.SIN_PHI, TF.COS_PHI, TF.E]] = [-1, 2.1, 0.5, 0, 1, 3.1]
    reg[1, [TF.PT, TF.ETA, TF.COS_PHI, TF.E]] = [3.9, -1.0, -1.0, 6.0]
    reg[2, [TF.PT, TF.E]] = [9.0, 10.0]
    return [e0, e1], x, cls, reg


def test_element_features_and_targets_tiny():
    evs, x_exp, cls_exp, reg_exp = tiny_events()
    chunk = io.events_to_awkward(evs)
    x, off = loader.element_features(chunk)
    assert x.dtype == np.float32 and x.shape == (5, len(schema.ElementFeature))
    np.testing.assert_array_equal(off, [0, 2, 5])
    np.testing.assert_allclose(x, x_exp, atol=1e-6)
    cls, reg, toff = loader.element_targets(chunk)
    assert cls.dtype == np.int64 and reg.dtype == np.float32
    np.testing.assert_array_equal(cls, cls_exp)
    np.testing.assert_allclose(reg, reg_exp, atol=1e-6)
    np.testing.assert_array_equal(toff, off)


def test_element_features_interleaving_random():
    """Vectorised build agrees with a per-event loop (tracks first, then clusters, per event)."""
    chunk = io.events_to_awkward(synthetic_events(30, seed=3))
    x, off = loader.element_features(chunk)
    for i in range(len(chunk)):
        rows = x[off[i] : off[i + 1]]
        nt = len(chunk.trk[i])
        assert len(rows) == nt + len(chunk.clu[i])
        assert np.all(rows[:nt, EF.TYPE] == schema.ElementType.TRACK)
        np.testing.assert_array_equal(rows[:nt, EF.PT], ak.to_numpy(chunk.trk.pt[i]))
        np.testing.assert_array_equal(rows[:nt, EF.D0], ak.to_numpy(chunk.trk.d0[i]))
        np.testing.assert_array_equal(rows[nt:, EF.PT], ak.to_numpy(chunk.clu.et[i]))
        np.testing.assert_array_equal(rows[nt:, EF.TYPE], ak.to_numpy(chunk.clu.layer[i]) + 1)
        assert np.all(rows[nt:, EF.D0] == 0) and np.all(rows[:nt, EF.E_ECAL] == 0)


def test_targets_misaligned_and_bad_layer():
    evs = synthetic_events(4, seed=1)
    evs[2]["tgt_cls"] = np.append(evs[2]["tgt_cls"], 1).astype("i4")
    for k in ("charge", "pt", "eta", "sin_phi", "cos_phi", "e"):
        evs[2][f"tgt_{k}"] = np.append(evs[2][f"tgt_{k}"], 0).astype(evs[2][f"tgt_{k}"].dtype)
    with pytest.raises(io.SchemaError, match=r"event 2 \(event_id 102\).*not element-aligned"):
        loader.element_targets(io.events_to_awkward(evs))
    evs, *_ = tiny_events()
    evs[1]["clu_layer"] = np.array([1, 9, 1], "i4")
    with pytest.raises(io.SchemaError, match="event 1: cluster has unknown clu_layer 9"):
        loader.element_features(io.events_to_awkward(evs))


def _write(path, evs, cuts):
    chunk = io.events_to_awkward(evs)
    with io.EventWriter(path) as w:
        for a, b in zip(cuts[:-1], cuts[1:]):
            w.write(chunk[a:b])


def test_dataset_tiny_batches_values(tmp_path):
    evs, x_exp, cls_exp, reg_exp = tiny_events()
    for e in evs:
        e.update(process=1, n_pileup=0, weight=1.0, seed=0, **_zeros("gen", 0))
    _write(tmp_path / "tiny.root", evs, [0, 2])
    ds = loader.MLPFDataset(tmp_path / "tiny.root", batch_size=4, buckets=(2, 4, 8))
    batches = list(ds)
    assert len(batches) == 2  # event 7 (2 elements) -> bucket 2; event 8 (3 elements) -> bucket 4
    b0, b1 = batches
    assert b0["features"].shape == (1, 2, len(EF)) and b1["features"].shape == (1, 4, len(EF))
    assert b0["features"].dtype == torch.float32 and b0["mask"].dtype == torch.bool
    assert b0["target_cls"].dtype == torch.int64 and b0["target_reg"].dtype == torch.float32
    np.testing.assert_allclose(b0["features"][0].numpy(), x_exp[0:2], atol=1e-6)
    np.testing.assert_allclose(b1["features"][0, :3].numpy(), x_exp[2:5], atol=1e-6)
    assert torch.all(b1["features"][0, 3] == 0)
    assert b0["mask"].tolist() == [[True, True]] and b1["mask"].tolist() == [[True, True, True, False]]
    assert b0["target_cls"].tolist() == [[1, 2]] and b1["target_cls"].tolist() == [[3, 0, 0, 0]]
    np.testing.assert_allclose(b1["target_reg"][0, :3].numpy(), reg_exp[2:5], atol=1e-6)
    assert b0["n_elements"].tolist() == [2] and b1["n_elements"].tolist() == [3]
    assert b0["event_id"].tolist() == [7] and b1["event_id"].tolist() == [8]
    # collate of per-event samples gives the same padded values at the common bucket
    samples = [
        {"features": x_exp[0:2], "target_cls": cls_exp[0:2], "target_reg": reg_exp[0:2], "event_id": 7},
        {"features": x_exp[2:5], "target_cls": cls_exp[2:5], "target_reg": reg_exp[2:5], "event_id": 8},
    ]
    c = loader.collate(samples, buckets=(2, 4, 8))
    assert c["features"].shape == (2, 4, len(EF))
    np.testing.assert_allclose(c["features"][0, :2].numpy(), x_exp[0:2], atol=1e-6)
    np.testing.assert_allclose(c["features"][1, :3].numpy(), x_exp[2:5], atol=1e-6)
    assert c["mask"].sum(dim=1).tolist() == [2, 3]
    assert c["target_cls"].tolist() == [[1, 2, 0, 0], [3, 0, 0, 0]]


def _unpack(batches) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = {}
    for b in batches:
        size = b["features"].shape[1]
        assert b["mask"].shape[1] == size and b["n_elements"].max() <= size
        for j, eid in enumerate(b["event_id"].tolist()):
            n = int(b["n_elements"][j])
            assert b["mask"][j].sum() == n and not b["mask"][j, n:].any()
            assert eid not in out, f"event {eid} delivered twice"
            out[eid] = (b["features"][j, :n].numpy(), b["target_cls"][j, :n].numpy(), b["target_reg"][j, :n].numpy())
    return out


@pytest.mark.parametrize("step_size,batch_size", [(7, 3), (100, 16)])
def test_dataset_random_matches_flat(tmp_path, step_size, batch_size):
    buckets = (8, 16, 32)
    evs1, evs2 = synthetic_events(20, seed=11), synthetic_events(13, seed=12)
    for k, e in enumerate(evs2):
        e["event_id"] = 500 + k
    _write(tmp_path / "a.root", evs1, [0, 9, 20])
    _write(tmp_path / "b.root", evs2, [0, 13])
    chunk = io.events_to_awkward(evs1 + evs2)
    x, off = loader.element_features(chunk)
    cls, reg, _ = loader.element_targets(chunk)
    ds = loader.MLPFDataset(str(tmp_path / "*.root"), step_size=step_size, batch_size=batch_size, buckets=buckets)
    batches = list(ds)
    for b in batches:
        assert len(b["event_id"]) <= batch_size
        assert b["features"].shape[1] in buckets
        assert b["features"].shape[1] == min(s for s in buckets if s >= b["n_elements"].max())
    got = _unpack(batches)
    ids = chunk.event_id.tolist()
    assert sorted(got) == sorted(ids)
    for i, eid in enumerate(ids):
        fx, fc, fr = got[eid]
        np.testing.assert_array_equal(fx, x[off[i] : off[i + 1]])
        np.testing.assert_array_equal(fc, cls[off[i] : off[i + 1]])
        np.testing.assert_array_equal(fr, reg[off[i] : off[i + 1]])


def test_dataloader_workers_shard_and_shuffle(tmp_path):
    evs = synthetic_events(40, seed=5)
    _write(tmp_path / "w.root", evs, [0, 40])
    dl = loader.make_dataloader(tmp_path / "w.root", batch_size=4, step_size=5, buckets=(8, 16, 32), num_workers=2)
    got = _unpack(list(dl))
    assert sorted(got) == [100 + i for i in range(40)]
    ds = loader.MLPFDataset(tmp_path / "w.root", step_size=5, batch_size=4, buckets=(8, 16, 32), shuffle=True, seed=3)
    order0 = [b["event_id"].tolist() for b in ds]
    order0_again = [b["event_id"].tolist() for b in ds]
    ds.set_epoch(1)
    order1 = [b["event_id"].tolist() for b in ds]
    assert order0 == order0_again and order0 != order1
    assert sorted(sum(order0, [])) == sorted(sum(order1, [])) == [100 + i for i in range(40)]
    assert ds.approx_num_batches() == 8 * math.ceil(5 / 4)


def test_oversize_event_raises_naming_file_and_event(tmp_path):
    evs = synthetic_events(5, seed=2, max_trk=4, max_clu=4)
    evs[3] = {"event_id": 103, "process": 1, "n_pileup": 0, "weight": 1.0, "seed": 0, **_zeros("gen", 0),
              **_zeros("trk", 10), **_zeros("clu", 7), **_zeros("tgt", 17)}
    evs[3]["clu_layer"] = np.ones(7, "i4")
    _write(tmp_path / "big.root", evs, [0, 5])
    ds = loader.MLPFDataset(tmp_path / "big.root", buckets=(8, 16))
    with pytest.raises(OversizeEventError, match=r"big\.root.*event_id 103 has 17 elements.*16"):
        list(ds)
