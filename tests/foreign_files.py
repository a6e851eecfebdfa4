"""Generator-level events written in foreign layouts for tests: Delphes (``Particle``/``GenJet`` split branches
with ``<name>_size`` counters) and CMS NanoAOD (``Events``: ``GenPart_*``, ``GenJet_*``, ``n<Collection>``).

Each layout is written two ways: with uproot (``mktree``), and by real ROOT (PyROOT, in a subprocess so ROOT's
signal handlers stay out of the test process): Delphes as split ``TClonesArray`` branches of ``TObject`` classes
with ``TRef``/``TRefArray`` members, NanoAOD as leaf lists (``GenJet_pt[nGenJet]/F``, ``nGenJet/i``,
``GenJet_nConstituents/b``, ``event/l``). The same events give the same arrays in every file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepzoo.datasets.jets import antikt_jets
from hepzoo.datasets.nanoaod import pdg_charge

HAVE_ROOT = importlib.util.find_spec("ROOT") is not None

_PIDS = np.array([211, -211, 321, -321, 2212, 22, 22, 22, 130, 2112, 11, -11, 13, -13, 12, -14], np.int32)
_MASS = {211: 0.13957, 321: 0.49368, 2212: 0.93827, 22: 0.0, 130: 0.49761, 2112: 0.93957, 11: 0.000511,
         13: 0.10566, 12: 0.0, 14: 0.0}


def generator_events(n_events: int = 12, seed: int = 0) -> dict[str, ak.Array]:
    """Per-event particles (collimated sprays, so jets pass the flash-sim cuts) and the anti-kt R=0.4 jets of
    the stable visible ones: jagged float32/int32 fields ``pid, status, charge, pt, eta, phi, mass, e`` and
    ``jet_pt, jet_eta, jet_phi, jet_mass, jet_nconst``."""
    rng = np.random.default_rng(seed)
    fields: dict[str, list] = {k: [] for k in ("pid", "status", "pt", "eta", "phi", "mass")}
    counts = []
    for event in range(n_events):
        n_sprays = 0 if event == 3 else int(rng.integers(1, 4))  # event 3: no jets at all
        parts = {k: [] for k in fields}
        for _ in range(n_sprays):
            eta0, phi0 = rng.uniform(-2.2, 2.2), rng.uniform(-np.pi, np.pi)
            k = int(rng.integers(6, 16))
            pid = rng.choice(_PIDS, k)
            parts["pid"].append(pid)
            parts["status"].append(np.where(rng.uniform(size=k) < 0.85, 1, 2))
            parts["pt"].append(rng.exponential(8.0, k) + 0.5)
            parts["eta"].append(eta0 + rng.normal(0, 0.08, k))
            parts["phi"].append(np.angle(np.exp(1j * (phi0 + rng.normal(0, 0.08, k)))))
            parts["mass"].append(np.array([_MASS[abs(int(p))] for p in pid]))
        for key in fields:
            fields[key].append(np.concatenate(parts[key]) if parts[key] else np.zeros(0))
        counts.append(len(fields["pt"][-1]))
    counts = np.array(counts)
    out = {}
    for key, values in fields.items():
        dtype = np.int32 if key in ("pid", "status") else np.float32
        out[key] = ak.unflatten(np.concatenate(values).astype(dtype), counts)
    pt, eta, m = (ak.to_numpy(ak.flatten(out[k])).astype(np.float64) for k in ("pt", "eta", "mass"))
    out["e"] = ak.unflatten(np.sqrt((pt * np.cosh(eta)) ** 2 + m**2).astype(np.float32), counts)
    out["charge"] = ak.values_astype(pdg_charge(out["pid"]), np.int32)
    visible = (out["status"] == 1) & (abs(out["pid"]) != 12) & (abs(out["pid"]) != 14)
    jets = antikt_jets(out["pt"][visible], out["eta"][visible], out["phi"][visible], out["e"][visible])
    for key, name in (("pt", "jet_pt"), ("eta", "jet_eta"), ("phi", "jet_phi"), ("m", "jet_mass"), ("n_const", "jet_nconst")):
        out[name] = jets[key]
    return out


def _delphes_arrays(ev: dict[str, ak.Array], with_genjet: bool) -> dict[str, ak.Array]:
    zeros = ak.values_astype(ev["pt"] * 0, np.float32)
    particle = {"PID": ev["pid"], "Status": ev["status"], "IsPU": ak.values_astype(ev["pid"] * 0, np.int32),
                "Charge": ev["charge"], "PT": ev["pt"], "Eta": ev["eta"], "Phi": ev["phi"], "E": ev["e"],
                "Mass": ev["mass"], "X": zeros, "Y": zeros, "Z": zeros}
    arrays = {"Particle": particle}
    if with_genjet:
        n_charged = ak.values_astype(ev["jet_nconst"] - ev["jet_nconst"] // 3, np.int32)
        arrays["GenJet"] = {"PT": ev["jet_pt"], "Eta": ev["jet_eta"], "Phi": ev["jet_phi"], "Mass": ev["jet_mass"],
                            "NCharged": n_charged, "NNeutrals": ak.values_astype(ev["jet_nconst"] - n_charged, np.int32)}
    return arrays


def _nanoaod_arrays(ev: dict[str, ak.Array]) -> dict[str, ak.Array]:
    return {
        "GenPart": {"pdgId": ev["pid"], "status": ev["status"], "pt": ev["pt"], "eta": ev["eta"], "phi": ev["phi"],
                    "mass": ev["mass"]},
        "GenJet": {"pt": ev["jet_pt"], "eta": ev["jet_eta"], "phi": ev["jet_phi"], "mass": ev["jet_mass"],
                   "nConstituents": ak.values_astype(ev["jet_nconst"], np.uint8)},
    }


def write_delphes_uproot(path: Path, ev: dict[str, ak.Array], with_genjet: bool = True,
                         override: dict[str, ak.Array] | None = None) -> Path:
    """Delphes layout with uproot: ``Particle.PT`` ... and ``Particle_size`` (``override``: branch -> values)."""
    arrays = _delphes_arrays(ev, with_genjet)
    for name, values in (override or {}).items():
        coll, field = name.split(".")
        arrays[coll][field] = values
    zipped = {k: ak.zip(v) for k, v in arrays.items()}
    with uproot.recreate(path) as f:
        tree = f.mktree("Delphes", {k: v.type.content for k, v in zipped.items()},
                        field_name=lambda o, i: f"{o}.{i}", counter_name=lambda o: f"{o}_size")
        tree.extend(zipped)
    return path


def write_nanoaod_uproot(path: Path, ev: dict[str, ak.Array], override: dict[str, ak.Array] | None = None) -> Path:
    """NanoAOD layout with uproot: ``GenJet_pt`` ... and ``nGenJet`` counters, plus the event scalars."""
    arrays = _nanoaod_arrays(ev)
    for name, values in (override or {}).items():
        coll, field = name.split("_", 1)
        arrays[coll][field] = values
    n = len(ev["pt"])
    zipped: dict = {k: ak.zip(v) for k, v in arrays.items()}
    zipped.update(event=np.arange(n, dtype=np.uint64), Pileup_nPU=np.full(n, -1, np.int32),
                  genWeight=np.ones(n, np.float32))
    with uproot.recreate(path) as f:
        types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in zipped.items()}
        tree = f.mktree("Events", types, field_name=lambda o, i: f"{o}_{i}", counter_name=lambda o: f"n{o}")
        tree.extend(zipped)
    return path


_ROOT_WRITER = r'''
import sys, warnings
import numpy as np
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import ROOT
layout, src, out = sys.argv[1:4]
d = np.load(src)
off = {k[4:]: d[k] for k in d.files if k.startswith("off_")}
val = {k[4:]: d[k] for k in d.files if k.startswith("val_")}
n_events = int(d["n_events"])
f = ROOT.TFile(out, "RECREATE")
if layout.startswith("delphes"):
    ROOT.gInterpreter.Declare("""
    class GenParticle : public TObject { public:
      Int_t PID; Int_t Status; Int_t IsPU; Int_t Charge; Float_t PT; Float_t Eta; Float_t Phi; Float_t E; Float_t Mass;
      Float_t X; Float_t Y; Float_t Z; TRef M1; TRef M2;
      ClassDef(GenParticle, 1) };
    class Jet : public TObject { public:
      Float_t PT; Float_t Eta; Float_t Phi; Float_t Mass; Int_t NCharged; Int_t NNeutrals; TRefArray Constituents;
      ClassDef(Jet, 1) };
    """)
    t = ROOT.TTree("Delphes", "Analysis tree")
    colls = {"Particle": "GenParticle"}
    if "GenJet" in off:
        colls["GenJet"] = "Jet"
    arrays, sizes = {}, {}
    import array
    for name, cls in colls.items():
        arrays[name] = ROOT.TClonesArray(cls)
        sizes[name] = array.array("i", [0])
        t.Branch(name, arrays[name], 64000, 99)
        t.Branch(name + "_size", sizes[name], name + "_size/I")
    for e in range(n_events):
        for name, arr in arrays.items():
            arr.Clear()
            a, b = off[name][e], off[name][e + 1]
            for k in range(b - a):
                obj = arr.ConstructedAt(k)
                for field in [x for x in val if x.startswith(name + ".")]:
                    v = val[field][a + k]
                    setattr(obj, field.split(".")[1], int(v) if v.dtype.kind in "iu" else float(v))
                if name == "GenJet" and k > 0:
                    obj.Constituents.Add(arrays["Particle"].At(0))  # a TRef into the Particle array
            sizes[name][0] = b - a
        t.Fill()
else:
    t = ROOT.TTree("Events", "Events")
    bufs = {}
    kinds = {"i": "I", "u": "b", "f": "F"}
    counters = {}
    for coll in off:
        counters[coll] = np.zeros(1, np.uint32)
        t.Branch("n" + coll, counters[coll], f"n{coll}/i")
    for field, v in val.items():
        coll = field.split("_")[0]
        bufs[field] = np.zeros(max(1, int(np.diff(off[coll]).max(initial=1))), v.dtype)
        t.Branch(field, bufs[field], f"{field}[n{coll}]/{kinds[v.dtype.kind]}")
    event = np.zeros(1, np.uint64); npu = np.zeros(1, np.int32); w = np.zeros(1, np.float32)
    t.Branch("event", event, "event/l"); t.Branch("Pileup_nPU", npu, "Pileup_nPU/I"); t.Branch("genWeight", w, "genWeight/F")
    for e in range(n_events):
        for coll in off:
            counters[coll][0] = off[coll][e + 1] - off[coll][e]
        for field, v in val.items():
            coll = field.split("_")[0]
            a, b = off[coll][e], off[coll][e + 1]
            bufs[field][: b - a] = v[a:b]
        event[0] = e; npu[0] = -1; w[0] = 1.0
        t.Fill()
t.Write()
f.Close()
'''


def _write_root(layout: str, arrays: dict[str, dict[str, ak.Array]], n_events: int, path: Path, sep: str) -> Path:
    payload = {"n_events": np.array(n_events)}
    for coll, fields in arrays.items():
        first = next(iter(fields.values()))
        payload[f"off_{coll}"] = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(first)))]).astype(np.int64)
        for name, values in fields.items():
            payload[f"val_{coll}{sep}{name}"] = ak.to_numpy(ak.flatten(values))
    src = path.with_suffix(".npz")
    np.savez(src, **payload)
    script = path.with_suffix(".writer.py")
    script.write_text(_ROOT_WRITER)
    proc = subprocess.run([sys.executable, str(script), layout, str(src), str(path)], capture_output=True, text=True,
                          timeout=300)
    src.unlink()
    script.unlink()
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(f"ROOT writer failed: {proc.stderr[-2000:]}")
    return path


def write_delphes_root(path: Path, ev: dict[str, ak.Array], with_genjet: bool = True) -> Path:
    """Delphes layout written by real ROOT: split TClonesArrays of TObject classes with TRef members."""
    return _write_root("delphes", _delphes_arrays(ev, with_genjet), len(ev["pt"]), path, ".")


def write_nanoaod_root(path: Path, ev: dict[str, ak.Array]) -> Path:
    """NanoAOD layout written by real ROOT: leaf lists with n<Collection> counters."""
    return _write_root("nanoaod", _nanoaod_arrays(ev), len(ev["pt"]), path, "_")
