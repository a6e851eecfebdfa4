"""Foreign layouts: Delphes (GenJet branch, or jets clustered from Particle) and CMS NanoAOD, written by uproot
and by real ROOT; strict mapped dtypes (no float -> int, no narrowing, exact integer PIDs/charges, counters
cross-checked); the RNTuple message; flashsim-jet through hepzoo run on every layout."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepzoo.datasets import io
from hepzoo.datasets.mapping import DELPHES_MAPPING
from hepzoo.datasets.nanoaod import NANOAOD_MAPPING

from foreign_files import (
    HAVE_ROOT,
    generator_events,
    write_delphes_root,
    write_delphes_uproot,
    write_nanoaod_root,
    write_nanoaod_uproot,
)

needs_root = pytest.mark.skipif(not HAVE_ROOT, reason="PyROOT not installed (pip install root; in the dev extra)")

WRITERS = {
    "delphes-uproot": ("delphes", lambda p, ev: write_delphes_uproot(p, ev)),
    "delphes-uproot-no-genjet": ("delphes", lambda p, ev: write_delphes_uproot(p, ev, with_genjet=False)),
    "nanoaod-uproot": ("nanoaod", write_nanoaod_uproot),
    "delphes-root": ("delphes", lambda p, ev: write_delphes_root(p, ev)),
    "delphes-root-no-genjet": ("delphes", lambda p, ev: write_delphes_root(p, ev, with_genjet=False)),
    "nanoaod-root": ("nanoaod", write_nanoaod_root),
}
CASES = [pytest.param(k, marks=needs_root) if k.endswith(("-root", "root-no-genjet")) else k for k in WRITERS]
MAPPINGS = {"delphes": DELPHES_MAPPING, "nanoaod": NANOAOD_MAPPING}


@pytest.fixture(scope="module")
def events():
    return generator_events(n_events=12, seed=0)


@pytest.fixture(scope="module")
def native(events, tmp_path_factory):
    """Our layout holding the same generator particles and jets, and flashsim-jet's output on it."""
    folder = tmp_path_factory.mktemp("native")
    mapped = io.read_events(write_delphes_uproot(folder / "d.root", events), mapping=DELPHES_MAPPING,
                            collections=["gen", "genjet"])
    path = folder / "native.root"
    with io.EventWriter(path) as writer:
        writer.write(mapped)
    return path, mapped


def _run(args):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    return CliRunner().invoke(app, ["run", *args, "--no-progress"])


@pytest.fixture(scope="module")
def native_output(native, tmp_path_factory):
    from hepzoo.runtime.runfile import read_output

    out = tmp_path_factory.mktemp("nout") / "out.root"
    result = _run(["flashsim-jet", "-i", str(native[0]), "-o", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    objects = read_output(out)
    assert ak.sum(ak.num(objects.flashjet)) > 5  # the comparison below compares something
    return objects


@pytest.mark.parametrize("case", CASES)
def test_every_writer_reads_as_the_same_events(case, events, native, tmp_path):
    layout, write = WRITERS[case]
    path = write(tmp_path / f"{case}.root", events)
    got = io.read_events(path, mapping=MAPPINGS[layout], collections=["gen", "genjet"])
    ref = native[1]
    for prefix in ("gen", "genjet"):
        for field in ref[prefix].fields:
            assert ak.array_equal(got[prefix][field], ref[prefix][field]), (prefix, field)
    assert ak.sum(ak.num(got.genjet)) == ak.sum(ak.num(events["jet_pt"])) > 10


@pytest.mark.parametrize("case", CASES)
def test_flashsim_jet_runs_on_every_layout(case, events, native_output, tmp_path):
    from hepzoo.runtime.runfile import read_output

    layout, write = WRITERS[case]
    path = write(tmp_path / f"{case}.root", events)
    out = tmp_path / "out.root"
    option = ["--delphes"] if case == "delphes-uproot" else ["--layout", layout]
    result = _run(["flashsim-jet", "-i", str(path), "-o", str(out), "--seed", "5", *option])
    assert result.exit_code == 0, result.output
    got = read_output(out)
    for field in native_output.flashjet.fields:
        assert ak.array_equal(got.flashjet[field], native_output.flashjet[field]), field
    assert got.entry.tolist() == list(range(12))


def test_nanoaod_without_constituent_counts_is_refused(events, tmp_path):
    """Plain NanoAOD has no GenJet_nConstituents: refused by name (the model takes it; no invented default)."""
    import foreign_files

    arrays = foreign_files._nanoaod_arrays(events)
    del arrays["GenJet"]["nConstituents"]
    zipped = {k: ak.zip(v) for k, v in arrays.items()}
    path = tmp_path / "nano.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("Events", {k: v.type.content for k, v in zipped.items()},
                        field_name=lambda o, i: f"{o}_{i}", counter_name=lambda o: f"n{o}")
        tree.extend(zipped)
    with pytest.raises(io.SchemaError, match=r"nano\.root: TTree 'Events' lacks branch 'GenJet_nConstituents'"):
        io.check_file(path, mapping=NANOAOD_MAPPING, collections=["genjet"])


# ---- strict mapped dtypes ----------------------------------------------------------------------------------


def _with(values: ak.Array, dtype, edit=None) -> ak.Array:
    flat = ak.to_numpy(ak.flatten(values)).astype(dtype)
    if edit is not None:
        edit(flat)
    return ak.unflatten(flat, ak.num(values))


def _first_row_of_entry(values: ak.Array, entry: int) -> int:
    return int(ak.sum(ak.num(values)[:entry]))


def test_delphes_int8_pt_is_refused_not_clipped(events, tmp_path):
    path = write_delphes_uproot(tmp_path / "int8.root", events, override={"Particle.PT": _with(events["pt"], np.int8)})
    with pytest.raises(io.SchemaError) as info:
        io.check_file(path, mapping=DELPHES_MAPPING)
    assert str(info.value).startswith(
        f"{path}: branch 'Particle.PT' (field gen_pt) has dtype int8, expected float32 (an integer branch would "
        "clip or quantise a float quantity): mapped layouts follow the native reader's dtype rules")


def test_fractional_pid_is_an_error_naming_branch_and_entry(events, tmp_path):
    row = _first_row_of_entry(events["pid"], 5) + 1

    def frac(flat):
        flat[row] = 211.5

    path = write_delphes_uproot(tmp_path / "frac.root", events,
                                override={"Particle.PID": _with(events["pid"], np.float32, frac)})
    with pytest.raises(io.SchemaError) as info:
        io.read_events(path, mapping=DELPHES_MAPPING)
    message = str(info.value)
    assert message.startswith(f"{path}: branch 'Particle.PID' (field gen_pid) has dtype float32, expected int32 (a "
                              "float branch is never truncated to an integer; entry 5 holds 211.5)"), message
    # a float PID branch is refused even when every value is whole: no float -> int cast
    whole = write_delphes_uproot(tmp_path / "whole.root", events, override={"Particle.PID": _with(events["pid"], np.float64)})
    with pytest.raises(io.SchemaError, match=r"'Particle\.PID' \(field gen_pid\) has dtype float64, expected int32"):
        io.check_file(whole, mapping=DELPHES_MAPPING)


def test_nanoaod_pid_checks(events, tmp_path):
    row = _first_row_of_entry(events["pid"], 7)

    def unknown(flat):
        flat[row] = 99999999

    path = write_nanoaod_uproot(tmp_path / "pid.root", events, override={"GenPart_pdgId": _with(events["pid"], np.int32, unknown)})
    with pytest.raises(io.SchemaError, match=r"pid\.root: branch 'computed from GenPart_pdgId' value nan at entry 7 is "
                                             r"not an integer \(field int32: never truncated\)"):
        io.check_file(path, mapping=NANOAOD_MAPPING, collections=["gen"])

    def huge(flat):
        flat[row] = 2**40

    wide = write_nanoaod_uproot(tmp_path / "wide.root", events, override={"GenPart_pdgId": _with(events["pid"], np.int64, huge)})
    with pytest.raises(io.SchemaError, match=r"branch 'GenPart_pdgId' value 1099511627776 at entry 7 does not fit int32"):
        io.check_file(wide, mapping=NANOAOD_MAPPING, collections=["gen"])


def test_mapped_counters_are_cross_checked(events, tmp_path):
    import foreign_files

    arrays = foreign_files._nanoaod_arrays(events)
    n_const = arrays["GenJet"].pop("nConstituents")
    shifted = ak.unflatten(ak.to_numpy(ak.flatten(n_const)), np.roll(ak.to_numpy(ak.num(n_const)), 1))
    data = {k: ak.zip(v) for k, v in arrays.items()}
    data["GenJet_nConstituents"] = shifted
    n = len(events["pt"])
    data.update(event=np.arange(n, dtype=np.uint64), Pileup_nPU=np.zeros(n, np.int32), genWeight=np.ones(n, np.float32))
    path = tmp_path / "counters.root"
    with uproot.recreate(path) as f:
        types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in data.items()}
        tree = f.mktree("Events", types, field_name=lambda o, i: f"{o}_{i}",
                        counter_name=lambda o: "nGenJetConst" if o == "GenJet_nConstituents" else f"n{o}")
        tree.extend(data)
    assert ak.num(events["jet_pt"])[:2].tolist() == [3, 1]  # rolled: [3, 3, ...]
    with pytest.raises(io.SchemaError, match=r"counters\.root: inconsistent counts in collection 'genjet' at entry 1: "
                                             r"'nGenJet' gives 1 objects, 'GenJet_nConstituents' gives 3"):
        io.check_file(path, mapping=NANOAOD_MAPPING, collections=["genjet"])


# ---- messages ----------------------------------------------------------------------------------------------


def test_rntuple_input_is_named_as_such(tmp_path):
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["events"] = {"x": np.arange(3.0)}  # uproot >= 5.7: an RNTuple
    with pytest.raises(io.SchemaError) as info:
        io.check_file(path)
    assert str(info.value).startswith(f"{path}: holds an RNTuple named 'events', not a TTree: hepzoo reads TTrees")
    result = _run(["mlpf-gnnlsh", "-i", str(path), "-o", str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines[-1].startswith(f"error: {path}: holds an RNTuple named 'events'"), result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_nanoaod_read_natively_gets_a_hint(events, tmp_path):
    path = write_nanoaod_uproot(tmp_path / "nano.root", events)
    with pytest.raises(io.SchemaError, match=r"no TTree 'events' in the file \(it holds 'Events' \(TTree\)\); it looks "
                                             r"like a CMS NanoAOD file: read it with NANOAOD_MAPPING \(hepzoo run --layout nanoaod\)"):
        io.check_file(path)


@pytest.mark.parametrize("args, message", [
    (["--layout", "lhe"], "--layout 'lhe': unknown layout; choose one of ['native', 'delphes', 'nanoaod']"),
    (["--delphes", "--layout", "nanoaod"], "--delphes contradicts --layout nanoaod: give one of them"),
])
def test_layout_option_errors_are_one_line(args, message, tmp_path):
    result = _run(["flashsim-jet", "-i", str(tmp_path / "x.root"), "-o", str(tmp_path / "out"), "--seed", "1", *args])
    assert result.exit_code == 1 and result.output.strip() == f"error: {message}", result.output
