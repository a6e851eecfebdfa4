"""Physical-value checks on runtime inputs: absurd, negative or unphysical values are refused before running,
with one line naming the event, the element and the feature (and, through run_file, the file and entries)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.datasets import io, schema  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402


from damage import set_value

EF = schema.ElementFeature


@pytest.fixture(scope="module")
def mlpf():
    return Session.load("mlpf-gnnlsh")


@pytest.mark.parametrize(
    "feature, value, message",
    [
        (EF.PT, -5.0, r"event 1: element 2 \((track|ecal cluster|hcal cluster)\) has pt = -5: negative"),
        (EF.E, -0.5, r"event 1: element 2 .*has e = -0.5: negative"),
        (EF.PT, 1e38, r"event 1: element 2 .*has pt = 1e\+38: \|value\| above 1e\+06"),
        (EF.E, 2e6, r"event 1: element 2 .*has e = 2e\+06: \|value\| above"),
        (EF.ETA, -1e30, r"event 1: element 2 .*has eta = -1e\+30: \|value\| above"),
        (EF.SIGMA_ETA, -0.1, r"event 1: element 2 .*has sigma_eta = -0.1: negative"),
    ],
)
def test_unphysical_element_values_refused(mlpf, feature, value, message, make_features):
    x, off = make_features([4, 5, 3], seed=1)
    x[off[1] + 2, feature] = value
    with pytest.raises(ValueError, match=message):
        mlpf.run_elements(x, off)
    with pytest.raises(ValueError, match=r"\(1 such values in this input\)"):
        mlpf.run_elements(x, off)
    one = x[off[1] : off[2]]
    with pytest.raises(ValueError, match=message.replace("event 1", "event 0")):
        mlpf.submit(one).result()
    x[off[1] + 2, feature] = abs(value) if abs(value) < 10 else 2.0  # made physical: runs
    assert mlpf.run_elements(x, off)["regression"].shape == (len(x), 5)


@pytest.mark.parametrize(
    "prefix, field, value, message",
    [
        ("clu", "eta", 12.0, r"event 1: element 4 \((ecal|hcal|hf) cluster\) has eta = 12: outside the physical range \(\|eta\| <= 10\)"),
        ("clu", "n_cells", 2.5, r"event 1: element 4 .*has n_cells = 2.5: not an integer"),
        ("trk", "muon_stations", -2, r"event 1: element 1 \(track\) has muon_stations = -2: negative, must be >= 0"),
    ],
)
def test_event_inputs_held_to_the_whole_element_policy(mlpf, prefix, field, value, message, make_events):
    """Rows computed from events meet every rule of schema.ELEMENT_POLICY (raw rows: finite, magnitude, sign)."""
    events = make_events([2, 3, 1], [1, 2, 2], seed=3)
    coll = events[prefix]
    counts = ak.num(coll, axis=1)
    flat = ak.to_numpy(ak.flatten(coll[field])).astype(np.float64 if isinstance(value, float) else np.int32)
    flat[int(counts[0]) + 1] = value
    bad = ak.with_field(events, ak.with_field(coll, ak.unflatten(flat, counts), field), prefix)
    with pytest.raises(ValueError, match=message):
        mlpf.run(bad)
    with pytest.raises(ValueError, match=message.replace("event 1", "event 0")):
        mlpf.submit(bad[1]).result()


def _with_track_charge(events: ak.Array, event: int, track: int, value) -> ak.Array:
    counts = ak.num(events.trk, axis=1)
    charge = ak.to_numpy(ak.flatten(events.trk.charge)).astype(np.float32)
    charge[int(ak.sum(counts[:event])) + track] = value
    return ak.with_field(events, ak.with_field(events.trk, ak.unflatten(charge, counts), "charge"), "trk")


@pytest.mark.parametrize("value", [0.5, 0, 2, -3])
def test_track_charge_must_be_plus_or_minus_one(mlpf, value, make_events):
    events = make_events([2, 3, 1], [1, 2, 2], seed=3)
    bad = _with_track_charge(events, 1, 2, value)
    with pytest.raises(ValueError, match=rf"event 11: element 2 \(track\) has charge = {value:g}: a track charge must be -1 or \+1"):
        mlpf.run(bad, first_entry=10)
    with pytest.raises(ValueError, match=r"element 2 \(track\) has charge"):
        mlpf.submit(bad[1]).result()
    good = _with_track_charge(events, 1, 2, -1)
    assert len(mlpf.run(good)) == 3


def test_run_file_names_file_entries_event_element_feature(mlpf, tmp_path, make_events):
    events = make_events([2, 3, 1, 2], [1, 2, 2, 0], seed=3)
    counts = ak.num(events.trk, axis=1)
    pt = ak.to_numpy(ak.flatten(events.trk.pt)).copy()
    pt[int(ak.sum(counts[:3]))] = -2.0
    broken = ak.with_field(events, ak.with_field(events.trk, ak.unflatten(pt, counts), "pt"), "trk")
    path = tmp_path / "negative.root"
    with io.EventWriter(path) as writer:
        writer.write(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"negative\.root: entries 2-3: event 3: element 0 \(track\) has pt = -2: negative"):
        mlpf.run_file(path, out / "o.root", step_size=2)
    assert list(out.iterdir()) == []


# ---- flash-sim: generator objects checked before the selection cuts; outputs checked before writing ----------


def _gen_events(n_events: int = 6, seed: int = 0) -> ak.Array:
    """Generator-level events (``gen`` + ``genjet``): plausible particles and jets that pass the jet cuts."""
    rng = np.random.default_rng(seed)
    evs = []
    for i in range(n_events):
        ev = {"event_id": i, "process": 1, "n_pileup": 0, "weight": 1.0, "seed": seed}
        ng, nj = 12, 3
        pt = rng.exponential(10.0, ng) + 0.5
        eta = rng.uniform(-2.4, 2.4, ng)
        gen = {"pid": rng.choice([211, -211, 22, 130, 11], ng), "charge": rng.choice([-1, 0, 1], ng), "pt": pt,
               "eta": eta, "phi": rng.uniform(-np.pi, np.pi, ng), "e": pt * np.cosh(eta), "m": np.full(ng, 0.14),
               "vx": np.zeros(ng), "vy": np.zeros(ng), "vz": rng.normal(0, 30, ng), "is_pu": np.zeros(ng, bool),
               "elem_idx": np.full(ng, -1)}
        jet = {"pt": rng.uniform(20, 200, nj), "eta": rng.uniform(-2, 2, nj), "phi": rng.uniform(-np.pi, np.pi, nj),
               "m": rng.uniform(2, 20, nj), "n_const": rng.integers(2, 30, nj)}
        for prefix, values in (("gen", gen), ("genjet", jet)):
            coll = schema.COLLECTIONS[prefix]
            for f in coll.fields:
                ev[coll.branch(f.name)] = np.asarray(values[f.name]).astype(np.dtype(f.dtype))
        evs.append(ev)
    return io.events_to_awkward(evs)


@pytest.fixture(scope="module")
def flashjet():
    return Session.load("flashsim-jet")


@pytest.mark.parametrize(
    "prefix, field, value, shown",
    [("genjet", "pt", np.nan, "nan"), ("genjet", "pt", -30.0, "-30"), ("genjet", "eta", -np.inf, "-inf"),
     ("genjet", "pt", 3e38, "3e+38"), ("gen", "e", np.nan, "nan"), ("gen", "pt", -1.0, "-1")],
)
def test_flashsim_bad_generator_object_is_an_error_not_a_dropped_jet(flashjet, prefix, field, value, shown):
    events = _gen_events()
    good = flashjet.run(events, seed=1)
    assert len(good) == len(events)
    bad = set_value(events, prefix, field, 4, 1, value)
    with pytest.raises(ValueError, match=rf"event 14: {prefix}_{field} of object 1 is {re_escape(shown)}: "):
        flashjet.run(bad, seed=1, first_entry=10)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_flashsim_run_file_refuses_bad_generator_jet_and_writes_nothing(flashjet, tmp_path):
    path = tmp_path / "gen.root"
    with io.EventWriter(path) as writer:
        writer.write(set_value(_gen_events(), "genjet", "pt", 3, 0, np.nan))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"gen\.root: entries 2-3: event 3: genjet_pt of object 0 is nan: not a finite"):
        flashjet.run_file(path, out / "jets.root", seed=1, step_size=2)
    assert list(out.iterdir()) == []


def test_non_finite_output_is_an_error_not_written(flashjet, tmp_path, monkeypatch):
    """A model output that decodes to pT = inf (here: a backend returning a huge pT response) is refused."""
    path = tmp_path / "gen.root"
    with io.EventWriter(path) as writer:
        writer.write(_gen_events())
    run = flashjet.backend.run

    def huge_response(inputs):
        result = dict(run(inputs))
        result["sample"] = result["sample"].copy()
        result["sample"][:, 0] = 3e38  # JetTarget.PT_RESPONSE: gen pT x 3e38 overflows float32
        return result

    monkeypatch.setattr(flashjet.backend, "run", huge_response)
    with pytest.raises(ValueError, match=r"gen\.root: entries 0-5: event \d: output flashsim-jet object \d has a non-finite pt"):
        flashjet.run_file(path, tmp_path / "jets.root", seed=1)
    assert not (tmp_path / "jets.root").exists() and not list(tmp_path.glob(".*tmp"))


def test_check_outputs_names_event_object_and_field():
    from hepzoo.runtime.checks import check_outputs

    objects = ak.zip({"pt": ak.Array([[1.0], [], [2.0, np.inf]]), "n": ak.Array([[1], [], [2, 3]])})
    with pytest.raises(ValueError, match=r"event 7: output x object 1 has a non-finite pt \(1 such objects"):
        check_outputs(objects, 5, "x")
    check_outputs(objects[:2], 5, "x")


# ---- hepzoo run: arguments checked as arguments; no output folder before the inputs pass; inputs never overwritten


def _invoke(args):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    return CliRunner().invoke(app, ["run", *args, "--no-progress"])


def _one_line_error(result, alone: bool = True) -> str:
    """The error line (the last line; ``alone``: nothing was printed before it, not even the model line)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output and sum(line.startswith("error") for line in lines) == 1, result.output
    assert len(lines) == 1 or (not alone and len(lines) == 2 and " on backend " in lines[0]), result.output
    return lines[-1]


@pytest.mark.parametrize(
    "option, value, message",
    [("--seed", "99999999999999999999999", "--seed 99999999999999999999999: must be an integer from 0 to"),
     ("--seed", "-1", "--seed -1: must be an integer from 0 to"),
     ("--step-size", "0", "--step-size 0: must be a positive number of events"),
     ("--step-size", "-5", "--step-size -5: must be a positive number of events")],
)
def test_cli_bad_arguments_name_the_option_before_anything_is_made(tmp_path, option, value, message):
    source = tmp_path / "gen.root"
    with io.EventWriter(source) as writer:
        writer.write(_gen_events())
    args = ["flashsim-jet", "-i", str(source), "-o", str(tmp_path / "out"), "--seed", "1", option, value]
    line = _one_line_error(_invoke(args))
    assert message in line and "gen.root" not in line and "truncated" not in line
    assert not (tmp_path / "out").exists()


def test_no_output_folder_before_the_inputs_pass(tmp_path, make_events):
    truncated = tmp_path / "truncated.root"
    with io.EventWriter(tmp_path / "good.root") as writer:
        writer.write(make_events([2, 3], [1, 2], seed=1))
    truncated.write_bytes((tmp_path / "good.root").read_bytes()[:-300])
    gen_only = tmp_path / "gen_only.root"
    with io.EventWriter(gen_only) as writer:
        writer.write(_gen_events())
    for source in (truncated, gen_only, tmp_path / "missing.root"):  # corrupt; no trk/clu for MLPF; absent
        line = _one_line_error(_invoke(["mlpf-gnnlsh", "-i", str(source), "-o", str(tmp_path / "out")]), alone=False)
        assert source.name in line
        assert not (tmp_path / "out").exists(), line


def test_output_equal_to_input_is_refused_even_with_overwrite(tmp_path, make_events):
    source = tmp_path / "events.root"
    with io.EventWriter(source) as writer:
        writer.write(make_events([2, 3], [1, 2], seed=1))
    before = source.read_bytes()
    for extra in ([], ["--overwrite"]):
        line = _one_line_error(_invoke(["mlpf-gnnlsh", "-i", str(source), "-o", str(source), *extra]), alone=False)
        assert "is the input file" in line and "never overwritten" in line
    with pytest.raises(ValueError, match="never overwritten"):
        Session.load("mlpf-gnnlsh").run_file(source, tmp_path / "." / "events.root", overwrite=True)
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["events.root"]


def test_cli_error_printer_collapses_multi_line_messages():
    """uproot's errors span several lines (file path, object path, hints); the CLI prints one line."""
    import typer
    from typer.testing import CliRunner

    from hepzoo.cli import _clear_errors

    app = typer.Typer()

    @app.command()
    @_clear_errors
    def fail(kind: str) -> None:
        if kind == "multi":
            raise ValueError("not found: 'events'\n    in file /data/x.root\n\n  in object /Delphes;1")
        raise OSError()

    multi = CliRunner().invoke(app, ["multi"])
    assert multi.exit_code == 1
    assert multi.output.splitlines() == ["error: not found: 'events' in file /data/x.root in object /Delphes;1"]
    empty = CliRunner().invoke(app, ["empty"])
    assert empty.exit_code == 1 and empty.output.splitlines() == ["error: OSError"]
