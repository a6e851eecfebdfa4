"""ROOT I/O: packing, atomic writing, validated chunked reading, Delphes mapping."""

from __future__ import annotations

import gc
import os

import awkward as ak
import numpy as np
import pytest
import uproot

from hepzoo.datasets import io, schema
from hepzoo.datasets.mapping import DELPHES_MAPPING, BranchMapping, CollectionMapping


def random_events(n: int, seed: int = 0, prefixes=None, max_count: int = 6) -> list[dict]:
    """Random schema-conforming per-event dicts (with an extra private key that must be ignored)."""
    rng = np.random.default_rng(seed)
    prefixes = list(schema.COLLECTIONS) if prefixes is None else prefixes
    out = []
    for i in range(n):
        ev: dict = {
            "event_id": 1000 + i,
            "process": int(schema.Process.TTBAR),
            "n_pileup": int(rng.integers(0, 50)),
            "weight": float(rng.random()),
            "seed": 42,
            "_private": "ignored",
        }
        for p in prefixes:
            coll = schema.COLLECTIONS[p]
            k = 0 if rng.random() < 0.2 else int(rng.integers(1, max_count))
            for f in coll.fields:
                dt = np.dtype(f.dtype)
                if dt.kind == "f":
                    v = rng.normal(size=k).astype(dt)
                elif dt.kind == "b":
                    v = rng.random(k) < 0.5
                else:
                    v = rng.integers(-3, 300, size=k).astype(dt)
                ev[coll.branch(f.name)] = v
        out.append(ev)
    return out


def write_chunks(path, chunk, cuts):
    with io.EventWriter(path) as w:
        for a, b in zip(cuts[:-1], cuts[1:]):
            w.write(chunk[a:b])


def type_str(a: ak.Array) -> str:
    return str(a.type.content)


# ---- packing -------------------------------------------------------------------------------------------


def test_events_to_awkward_values_and_dtypes():
    evs = random_events(20, seed=1)
    chunk = io.events_to_awkward(evs)
    assert len(chunk) == 20
    assert "_private" not in chunk.fields
    for p, coll in schema.COLLECTIONS.items():
        for f in coll.fields:
            flat = ak.flatten(chunk[p][f.name])
            assert ak.to_numpy(flat).dtype == np.dtype(f.dtype), coll.branch(f.name)
    for k, dt in schema.EVENT_SCALARS.items():
        assert ak.to_numpy(chunk[k]).dtype == dt
    for i in (0, 7, 19):
        np.testing.assert_array_equal(ak.to_numpy(chunk.gen.pt[i]), evs[i]["gen_pt"])
        np.testing.assert_array_equal(ak.to_numpy(chunk.trk.eta_calo[i]), evs[i]["trk_eta_calo"])
        np.testing.assert_array_equal(ak.to_numpy(chunk.gen.is_pu[i]), evs[i]["gen_is_pu"])
        assert chunk.event_id[i] == 1000 + i
    assert ak.to_list(ak.num(chunk.clu)) == [len(e["clu_e"]) for e in evs]


def test_events_to_awkward_subset_and_errors():
    evs = random_events(5, prefixes=["gen", "trk"])
    chunk = io.events_to_awkward(evs)
    assert "gen" in chunk.fields and "trk" in chunk.fields and "recojet" not in chunk.fields
    bad = random_events(5, prefixes=["gen"])
    bad[3]["gen_eta"] = np.append(bad[3]["gen_eta"], np.float32(1.0))
    with pytest.raises(io.SchemaError, match=r"event 3.*gen_eta"):
        io.events_to_awkward(bad)
    missing = random_events(4, prefixes=["gen"])
    del missing[2]["gen_vz"]
    with pytest.raises(io.SchemaError, match=r"event 2.*gen_vz"):
        io.events_to_awkward(missing)
    empty = io.events_to_awkward([])
    assert len(empty) == 0 and set(schema.COLLECTIONS) <= set(empty.fields)


# ---- round trip ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("step_size", [1, 5, 37, 1000, "1 MB"])
def test_round_trip(tmp_path, step_size):
    evs = random_events(37, seed=2)
    chunk = io.events_to_awkward(evs)
    path = tmp_path / "events.root"
    write_chunks(path, chunk, [0, 10, 11, 30, 37])
    chunks = list(io.iterate_events(path, step_size=step_size))
    if isinstance(step_size, int):
        assert [len(c) for c in chunks] == [min(step_size, 37 - s) for s in range(0, 37, step_size)]
    back = ak.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    assert type_str(back) == type_str(chunk)
    assert ak.array_equal(back, chunk, check_parameters=False)
    assert os.listdir(tmp_path) == ["events.root"]  # no temporary left behind
    assert ak.array_equal(io.read_range(path, 10, 20), chunk[10:20])
    assert io.num_entries(path) == 37
    meta = io.read_metadata(path)
    assert meta["n_events"] == 37 and meta["tree"] == schema.TREE_NAME
    with uproot.open(path) as f:  # collections share the n<prefix> counter
        assert f[schema.TREE_NAME]["gen_pt"].count_branch.name == "ngen"
        assert f[schema.TREE_NAME]["ntgt"].array(library="np").tolist() == [len(e["tgt_cls"]) for e in evs]


def test_read_subset_glob_and_partial_collections(tmp_path):
    for i in range(3):
        write_chunks(tmp_path / f"part{i}.root", io.events_to_awkward(random_events(4, seed=10 + i)), [0, 4])
    back = io.read_events(str(tmp_path / "part*.root"), collections=["trk"], step_size=3)
    assert set(back.fields) == set(schema.EVENT_SCALARS) | {"trk"}
    assert back.event_id.tolist() == [1000, 1001, 1002, 1003] * 3
    expected = ak.concatenate([io.events_to_awkward(random_events(4, seed=10 + i)).trk for i in range(3)])
    assert ak.array_equal(back.trk, expected)
    # a file with only some collections: read what it has
    path = tmp_path / "genonly.root"
    write_chunks(path, io.events_to_awkward(random_events(6, prefixes=["gen"])), [0, 6])
    assert set(io.read_events(path).fields) == set(schema.EVENT_SCALARS) | {"gen"}
    with pytest.raises(io.SchemaError, match=r"genonly\.root.*trk_pt"):
        io.read_events(path, collections=["gen", "trk"])
    with pytest.raises(FileNotFoundError, match="nothing"):
        io.read_events(str(tmp_path / "nothing*.root"))


# ---- writer atomicity ---------------------------------------------------------------------------------


def test_writer_failure_leaves_nothing(tmp_path):
    chunk = io.events_to_awkward(random_events(10))
    path = tmp_path / "out.root"
    with pytest.raises(RuntimeError, match="boom"):
        with io.EventWriter(path) as w:
            w.write(chunk[:5])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_failure_does_not_clobber(tmp_path):
    path = tmp_path / "out.root"
    write_chunks(path, io.events_to_awkward(random_events(3)), [0, 3])
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with io.EventWriter(path) as w:
            w.write(io.events_to_awkward(random_events(8, seed=5)))
            raise RuntimeError("midway")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.root"]
    assert len(io.read_events(path)) == 3


def test_writer_never_closed_is_cleaned_up(tmp_path):
    w = io.EventWriter(tmp_path / "lost.root")
    w.write(io.events_to_awkward(random_events(2)))
    assert len(os.listdir(tmp_path)) == 1  # the temporary
    del w
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_writer_rejects_changed_layout(tmp_path):
    with pytest.raises(io.SchemaError, match="first chunk"):
        with io.EventWriter(tmp_path / "x.root") as w:
            w.write(io.events_to_awkward(random_events(2)))
            w.write(io.events_to_awkward(random_events(2, prefixes=["gen"])))
    assert os.listdir(tmp_path) == []


# ---- bad input ----------------------------------------------------------------------------------------


def test_truncated_file(tmp_path):
    path = tmp_path / "trunc.root"
    write_chunks(path, io.events_to_awkward(random_events(300, seed=3)), [0, 100, 200, 300])
    data = path.read_bytes()
    for frac in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{int(frac * 100)}.root"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(io.SchemaError, match=f"cut{int(frac * 100)}\\.root.*(truncated|corrupt)"):
            io.check_file(cut)


def test_empty_and_not_root(tmp_path):
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with pytest.raises(io.SchemaError, match=r"empty\.root.*empty \(0 bytes\)"):
        list(io.iterate_events(empty))
    text = tmp_path / "text.root"
    text.write_text("this is not ROOT\n" * 100)
    with pytest.raises(io.SchemaError, match=r"text\.root"):
        io.check_file(text)


def test_zero_entries_and_missing_tree(tmp_path, write_raw):
    path = tmp_path / "zero.root"
    with io.EventWriter(path):
        pass
    with pytest.raises(io.SchemaError, match=r"zero\.root.*0 entries"):
        io.check_file(path)
    other = tmp_path / "other.root"
    write_raw(other, "notevents", {"x": np.arange(3, dtype="i4")})
    with pytest.raises(io.SchemaError, match=r"other\.root.*no TTree 'events'"):
        io.check_file(other)


def test_missing_branch(tmp_path, write_raw, schema_arrays):
    chunk = io.events_to_awkward(random_events(5, prefixes=["gen", "trk"]))
    path = tmp_path / "nogeneta.root"
    write_raw(path, "events", schema_arrays(chunk, drop=("gen_eta",)))
    with pytest.raises(io.SchemaError, match=r"nogeneta\.root.*lacks branch 'gen_eta'"):
        io.check_file(path)
    # a collection not requested may be incomplete
    assert len(io.read_events(path, collections=["trk"])) == 5


def test_wrong_dtype_and_widening(tmp_path, write_raw, schema_arrays):
    chunk = io.events_to_awkward(random_events(6, prefixes=["gen", "clu"]))
    bad = tmp_path / "intpt.root"
    gen = {f: chunk.gen[f] for f in schema.GEN.field_names}
    gen["pt"] = ak.values_astype(chunk.gen.pt * 10, np.int32)
    write_raw(bad, "events", schema_arrays(chunk, override={"gen": ak.zip(gen)}))
    with pytest.raises(io.SchemaError, match=r"intpt\.root.*'gen_pt'.*int32.*expected float32"):
        io.check_file(bad)

    wide = tmp_path / "wide.root"
    clu = {f: chunk.clu[f] for f in schema.CLU.field_names}
    clu["e"] = ak.values_astype(chunk.clu.e, np.float64) + 1e-9
    clu["n_cells"] = ak.values_astype(chunk.clu.n_cells, np.int64)
    write_raw(wide, "events", schema_arrays(chunk, override={"clu": ak.zip(clu), "weight": ak.to_numpy(chunk.weight).astype("f8")}))
    back = io.read_events(wide)
    assert ak.to_numpy(ak.flatten(back.clu.e)).dtype == np.float32
    assert ak.to_numpy(back.weight).dtype == np.float32
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(back.clu.e)), ak.to_numpy(ak.flatten(chunk.clu.e)), rtol=1e-6)
    assert ak.array_equal(back.clu.n_cells, chunk.clu.n_cells)
    with pytest.raises(io.SchemaError, match=r"wide\.root.*'weight'.*float64.*strict"):
        io.check_file(wide, strict=True)

    overflow = tmp_path / "overflow.root"
    clu["e"] = chunk.clu.e
    n_cells = ak.to_numpy(ak.flatten(chunk.clu.n_cells)).astype(np.int64)
    first_event = int(np.argmax(ak.to_numpy(ak.num(chunk.clu)) > 0))
    n_cells[0] = 2**40
    clu["n_cells"] = ak.unflatten(n_cells, ak.num(chunk.clu))
    write_raw(overflow, "events", schema_arrays(chunk, override={"clu": ak.zip(clu)}))
    with pytest.raises(io.SchemaError, match=rf"overflow\.root.*'clu_n_cells'.*entry {first_event}"):
        io.check_file(overflow)


def test_inconsistent_counters(tmp_path, write_raw, schema_arrays):
    chunk = io.events_to_awkward(random_events(8, prefixes=["gen"], seed=4))
    eta = ak.to_list(chunk.gen.eta)
    eta[5] = eta[5] + [0.5]
    eta_arr = ak.values_astype(ak.Array(eta), np.float32)
    path = tmp_path / "counts.root"
    write_raw(path, "events", schema_arrays(chunk, drop=("gen_eta",), override={"gen_eta": eta_arr}))
    with uproot.open(path) as f:  # gen_eta really has its own counter in this file
        assert f["events"]["gen_eta"].count_branch.name == "ngen_eta"
    for step in (3, 100):
        with pytest.raises(io.SchemaError, match=r"counts\.root.*'gen'.*entry 5 \(event_id 1005\).*gen_eta"):
            list(io.iterate_events(path, step_size=step))


# ---- Delphes mapping ----------------------------------------------------------------------------------


def test_delphes_mapping(tmp_path, delphes_file):
    path = tmp_path / "delphes.root"
    particle, track, tower = delphes_file(path)
    with uproot.open(path) as f:
        names = set(f["Delphes"].keys())
    assert {"Particle.PT", "Particle_size", "Track.EtaOuter", "Tower.Eem", "Tower_size"} <= names

    for step in (2, 100):
        ev = io.read_events(path, mapping=DELPHES_MAPPING, step_size=step)
        assert set(ev.fields) == set(schema.EVENT_SCALARS) | {"gen", "trk", "clu"}
        assert type_str(ev.gen) == type_str(io.events_to_awkward(random_events(1, prefixes=["gen"])).gen)
        stable = particle["Status"] == 1
        assert ak.array_equal(ev.gen.pt, particle["PT"][stable])
        assert ak.array_equal(ev.gen.pid, particle["PID"][stable])
        assert ak.array_equal(ev.gen.m, particle["Mass"][stable])
        assert ak.array_equal(ev.gen.is_pu, particle["IsPU"][stable] != 0)
        assert ak.all(ev.gen.elem_idx == -1)
        assert ak.all(ak.num(ev.gen) <= ak.num(particle["PT"]))
        assert ak.array_equal(ev.trk.eta_calo, track["EtaOuter"])
        assert ak.array_equal(ev.trk.z0, track["DZ"])
        assert ak.all(ev.trk.gen_idx == -1) and ak.all(ev.trk.pt_err == 0)
        assert ak.array_equal(ev.clu.e_ecal, tower["Eem"])
        expected_layer = np.where(
            np.abs(ak.to_numpy(ak.flatten(tower["Eta"]))) > 3,
            3,
            np.where(ak.to_numpy(ak.flatten(tower["Eem"] >= tower["Ehad"])), 1, 2),
        )
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(ev.clu.layer)), expected_layer)
        assert ak.all(ev.clu.n_cells == 1)
        assert ev.event_id.tolist() == list(range(6))
        assert ak.all(ev.process == int(schema.Process.EXTERNAL))
        assert ak.to_numpy(ak.flatten(ev.clu.layer)).dtype == np.int32

    only_trk = io.read_events(path, mapping=DELPHES_MAPPING, collections=["trk"])
    assert "gen" not in only_trk.fields and "trk" in only_trk.fields
    with pytest.raises(io.SchemaError, match="does not provide"):
        io.read_events(path, mapping=DELPHES_MAPPING, collections=["tgt"])
    # a native read of a Delphes file names the missing tree
    with pytest.raises(io.SchemaError, match=r"delphes\.root.*no TTree 'events'"):
        io.check_file(path)


def test_delphes_missing_branch(tmp_path, delphes_file):
    path = tmp_path / "nophiouter.root"
    delphes_file(path, drop=("Track.PhiOuter",))
    with pytest.raises(io.SchemaError, match=r"nophiouter\.root.*'Track\.PhiOuter'"):
        io.check_file(path, mapping=DELPHES_MAPPING)
    assert len(io.read_events(path, mapping=DELPHES_MAPPING, collections=["gen", "clu"])) == 6


def test_mapping_validation():
    with pytest.raises(ValueError, match="missing"):
        BranchMapping(tree="t", collections={"genjet": CollectionMapping(counter=None, fields={"pt": "J.PT"})})
