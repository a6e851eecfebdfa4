"""Shared test fixtures. Test modules import nothing from each other: what several of them use lives here, the
plain functions below handed out by the factory fixtures at the end (e.g. ``def test_x(make_events): ...``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

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


# ---- ROOT files written raw (layouts that break the schema, Delphes trees) -------------------------------


def _write_raw(path, tree, arrays, **mktree_kw):
    """Write arbitrary branches with uproot (for files that break the schema)."""
    types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in arrays.items()}
    with uproot.recreate(path) as f:
        t = f.mktree(tree, types, **mktree_kw)
        t.extend(arrays)


def _schema_arrays(chunk: ak.Array, drop=(), override=None) -> dict:
    """Arrays for write_raw in the schema layout, minus some branches, with some replaced."""
    out = {k: ak.to_numpy(chunk[k]) for k in schema.EVENT_SCALARS}
    for p, coll in schema.COLLECTIONS.items():
        if p not in chunk.fields:
            continue
        out[p] = ak.zip({f: chunk[p][f] for f in coll.field_names if coll.branch(f) not in drop})
    out.update(override or {})
    return out


def _delphes_file(path, n=6, seed=7, drop=(), physical=False):
    """``physical``: momenta/energies >= 0 and track charges ±1 (what a model may run on)."""
    rng = np.random.default_rng(seed)
    cp, ct, cw = (rng.integers(0, 7, n) for _ in range(3))
    cp[0] = 0

    def jag(counts, values):
        return ak.unflatten(np.asarray(values), counts)

    def f4(counts):
        return jag(counts, rng.normal(size=counts.sum()).astype(np.float32))

    def i4(counts, lo, hi):
        return jag(counts, rng.integers(lo, hi, counts.sum()).astype(np.int32))

    particle = {
        "PID": i4(cp, -250, 250), "Status": i4(cp, 1, 3), "IsPU": i4(cp, 0, 2), "Charge": i4(cp, -1, 2),
        "PT": f4(cp), "Eta": f4(cp), "Phi": f4(cp), "E": f4(cp), "Mass": f4(cp),
        "X": f4(cp), "Y": f4(cp), "Z": f4(cp),
    }
    track = {k: f4(ct) for k in ("PT", "Eta", "Phi", "P", "EtaOuter", "PhiOuter", "D0", "DZ")}
    track["Charge"] = i4(ct, -1, 2)
    tower = {k: f4(cw) for k in ("ET", "E", "Phi")}
    if physical:
        for coll, fields in ((particle, ("PT", "E")), (track, ("PT", "P")), (tower, ("ET", "E"))):
            for name in fields:
                coll[name] = abs(coll[name])
        track["Charge"] = jag(ct, rng.choice(np.array([-1, 1], np.int32), ct.sum()))
    tower["Eta"] = jag(cw, rng.uniform(-5, 5, cw.sum()).astype(np.float32))
    tower["Eem"] = jag(cw, rng.uniform(0, 10, cw.sum()).astype(np.float32))
    tower["Ehad"] = jag(cw, rng.uniform(0, 10, cw.sum()).astype(np.float32))
    for name in drop:
        coll, fld = name.split(".")
        del {"Particle": particle, "Track": track, "Tower": tower}[coll][fld]
    arrays = {"Particle": ak.zip(particle), "Track": ak.zip(track), "Tower": ak.zip(tower)}
    # mktree names the sub-branches with field_name and the counters with counter_name: Delphes' layout
    _write_raw(path, "Delphes", arrays, field_name=lambda o, i: f"{o}.{i}", counter_name=lambda o: f"{o}_size")
    return particle, track, tower


# ---- training: synthetic events and a config of the tiny model ----------------------------------------------


def _coll(prefix: str, k: int, rng: np.random.Generator) -> dict:
    out = {}
    for f in schema.COLLECTIONS[prefix].fields:
        dt = np.dtype(f.dtype)
        if dt.kind == "f":
            v = rng.uniform(0.5, 5.0, size=k)
        elif dt.kind == "b":
            v = np.zeros(k, bool)
        else:
            v = rng.integers(0, 4, size=k)
        out[schema.COLLECTIONS[prefix].branch(f.name)] = v.astype(dt)
    return out


def _synthetic_events(n: int, seed: int = 0, max_elements: int = 10, first_id: int = 0) -> list[dict]:
    """Schema-conforming events with positive kinematics and a learnable relation target <-> element."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ntrk = int(rng.integers(0, max_elements // 2 + 1))
        nclu = int(rng.integers(1, max_elements - ntrk + 1))
        ev = {"event_id": first_id + i, "process": 1, "n_pileup": 0, "weight": 1.0, "seed": seed}
        ev.update(_coll("gen", 0, rng))
        ev.update(_coll("trk", ntrk, rng))
        ev.update(_coll("clu", nclu, rng))
        ev.update(_coll("tgt", ntrk + nclu, rng))
        ev["trk_charge"] = rng.choice([-1, 1], size=ntrk).astype(np.int32)
        ev["clu_layer"] = rng.integers(1, 4, size=nclu).astype(np.int32)
        cls = np.concatenate([rng.choice([0, 1, 4, 5], size=ntrk), rng.choice([0, 2, 3], size=nclu)])
        ev["tgt_cls"] = cls.astype(np.int32)
        charge = np.concatenate([ev["trk_charge"], np.zeros(nclu, np.int32)])
        ev["tgt_charge"] = np.where(np.isin(cls, [1, 4, 5]), charge, 0).astype(np.int32)
        phi = rng.uniform(-np.pi, np.pi, size=ntrk + nclu)
        ev["tgt_sin_phi"], ev["tgt_cos_phi"] = np.sin(phi).astype("f4"), np.cos(phi).astype("f4")
        # generator jets on the first target slots (own generator: the element data stay as they were)
        jrng = np.random.default_rng([seed, i, 7])
        nj = min(2, ntrk + nclu)
        ev.update(_coll("genjet", nj, jrng))
        ev["genjet_pt"] = jrng.uniform(25.0, 60.0, size=nj).astype("f4")
        ev["genjet_eta"] = np.minimum(ev["tgt_eta"][:nj], 2.4).astype("f4")
        ev["genjet_phi"] = phi[:nj].astype("f4")
        out.append(ev)
    return out


def _write_events(path, events: list[dict], per_basket: int = 8) -> None:
    chunk = io.events_to_awkward(events)
    with io.EventWriter(path) as w:
        for a in range(0, len(chunk), per_basket):
            w.write(chunk[a : a + per_basket])


def _make_raw_config(tmp_path, **sections) -> dict:
    raw = {
        "model": {"name": "tiny_models:tiny_mlpf", "kwargs": {"width": 16}},
        "data": {
            "train": [str(tmp_path / "train.root")],
            "val": [str(tmp_path / "val.root")],
            "step_size": 8,
            "batch_size": 4,
            "buckets": [8, 16],
            "shuffle": True,
        },
        "optim": {"lr": 1e-2, "epochs": 2, "warmup_steps": 2, "weight_decay": 0.01, "grad_clip": 1.0},
        "seed": 3,
        "device": "cpu",
        "output_dir": str(tmp_path / "run"),
        "log_every_steps": 1,
        "progress": False,
    }
    for k, v in sections.items():
        raw[k] = {**raw[k], **v} if isinstance(raw.get(k), dict) else v
    return raw


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


@pytest.fixture(scope="session")
def write_raw():
    """``write_raw(path, tree, arrays, **mktree_kw)``: arbitrary branches written with uproot."""
    return _write_raw


@pytest.fixture(scope="session")
def schema_arrays():
    """``schema_arrays(chunk, drop=(), override=None) -> dict``: write_raw's arrays in the schema layout."""
    return _schema_arrays


@pytest.fixture(scope="session")
def delphes_file():
    """``delphes_file(path, n=6, seed=7, drop=(), physical=False) -> (particle, track, tower)``: a random
    Delphes-layout file."""
    return _delphes_file


@pytest.fixture(scope="session")
def synthetic_events():
    """``synthetic_events(n, seed=0, max_elements=10, first_id=0) -> list[dict]``: learnable training events."""
    return _synthetic_events


@pytest.fixture(scope="session")
def write_events():
    """``write_events(path, events, per_basket=8)``: event dicts written with the EventWriter."""
    return _write_events


@pytest.fixture(scope="session")
def make_raw_config():
    """``make_raw_config(tmp_path, **sections) -> dict``: a training config of the tiny model on
    tmp_path/{train,val}.root, sections merged in."""
    return _make_raw_config


@pytest.fixture(scope="session")
def tiny_mlpf():
    """``tiny_mlpf(**kw)``: the tiny stand-in model that make_raw_config's ``tiny_models:tiny_mlpf`` names."""
    from tiny_models import tiny_mlpf

    return tiny_mlpf


# ---- C++ bindings: built once per session ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_cpp() -> list[str]:
    """The ``make cpp`` command line (run at the repository root) that builds cpp_bindings/build with this venv."""
    return ["make", "-o", ".venv/.hepzoo-installed", "cpp", f"BIN={Path(sys.executable).parent}"]


@pytest.fixture(scope="session")
def cpp_build(make_cpp) -> Path:
    """``make cpp`` once per session (fetches headers on first use; a no-op rebuild when up to date): the build folder
    cpp_bindings/build (libhepzoo.so, hepzoo_tests, framework_module)."""
    missing = [tool for tool in ("cmake", "g++", "make") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the C++ bindings need {', '.join(missing)} on PATH")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(make_cpp, cwd=repo, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make cpp failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return repo / "cpp_bindings" / "build"
