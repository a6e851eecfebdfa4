"""The value policy declared once in the schema, and ``hepzoo run --on-bad-event skip``: an event whose input
breaks the policy is written with no objects (still one output entry per input event, in order), listed in the
run record (entry and reason) and counted by the CLI; every other event is identical to a clean run."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.datasets import io, schema  # noqa: E402
from hepzoo.runtime.runfile import read_output, read_run_record  # noqa: E402

from damage import set_value

N_EVENTS = 6


def _cli(args):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    return CliRunner().invoke(app, ["run", *args, "--no-progress"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A clean seeded ttbar file and a copy with entry 2's first track at pT -3 and entry 4's second generator
    particle at phi 7."""
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    folder = tmp_path_factory.mktemp("skip")
    good = folder / "good.root"
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=N_EVENTS, seed=1717, chunk_size=N_EVENTS), good, progress=False)
    events = io.read_events(good)
    assert ak.num(events.trk, axis=1)[2] > 0 and ak.num(events.gen, axis=1)[4] > 1
    broken = set_value(set_value(events, "trk", "pt", 2, 0, -3.0), "gen", "phi", 4, 1, 7.0)
    bad = folder / "bad.root"
    with io.EventWriter(bad) as writer:
        writer.write(broken)
    return good, bad


def test_policy_is_declared_for_every_feature_the_models_read():
    for prefix, rules in schema.VALUE_POLICY.items():
        assert set(rules) <= set(schema.COLLECTIONS[prefix].field_names), prefix
    for prefix in ("gen", "trk", "clu", "genjet"):  # what MLPF and flash-sim read
        for f in schema.COLLECTIONS[prefix].fields:
            if f.name in ("pt", "e", "et", "p", "eta", "phi", "charge", "pid", "n_hits", "n_cells", "n_const"):
                assert f.name in schema.VALUE_POLICY[prefix], (prefix, f.name)
    # the element policy: the computed columns of every schema element feature except impact parameters
    assert set(schema.ElementFeature) - set(schema.ELEMENT_POLICY) == {schema.ElementFeature.D0, schema.ElementFeature.Z0}
    reasons = lambda rule, x: [r for bad, r in rule.tests(np.array([x], np.float64)) if bad.any()]  # noqa: E731
    assert reasons(schema.PDGID, 211.0) == [] and reasons(schema.PDGID, 211.5) == ["not an integer"]
    assert reasons(schema.PDGID, 12345678.0) == ["not a PDG particle id (particle package)"]
    assert reasons(schema.CHARGE, 2.0) == ["not one of -1, 0, +1"]
    assert reasons(schema.PHI, np.float32(np.pi)) == [] and reasons(schema.PHI, 3.3) == [
        "outside the physical range (phi in [-pi, pi])"]
    assert reasons(schema.POSITIVE, 0.0) == ["must be > 0"] and reasons(schema.NON_NEGATIVE, 0.0) == []
    assert reasons(schema.FINITE, np.nan) == ["not a finite value"]
    assert reasons(schema.FINITE, 3e38) == ["|value| above 1e+06, not a physical value"]


def test_reader_check_values_names_file_branch_entry_object(files):
    good, bad = files
    assert len(io.read_events(bad)) == N_EVENTS  # without the check: what the file holds
    assert len(io.read_events(good, check_values=True)) == N_EVENTS
    with pytest.raises(io.SchemaError, match=r"bad\.root: entry 4: gen_phi of object 1 is 7: outside the physical "
                                             r"range \(phi in \[-pi, pi\]\) \(1 such values"):
        io.read_events(bad, check_values=True, collections=["gen"])
    with pytest.raises(io.SchemaError, match=r"bad\.root: entry 2: trk_pt of object 0 is -3: must be > 0"):
        io.read_events(bad, check_values=True, step_size=2)


@pytest.mark.parametrize(
    "model, extra, collection, entry, reason",
    [
        ("mlpf-gnnlsh", [], "mlpf", 2, "trk_pt of object 0 is -3: must be > 0"),
        ("flashsim-jet", ["--seed", "11"], "flashjet", 4, "gen_phi of object 1 is 7: outside the physical range"),
    ],
)
def test_on_bad_event_skip(files, tmp_path, model, extra, collection, entry, reason):
    good, bad = files
    clean = _cli([model, "-i", str(good), "-o", str(tmp_path / "clean.root"), *extra, "--step-size", "4"])
    assert clean.exit_code == 0, clean.output
    # the default refuses the file on one line naming file, entries, event and branch; nothing is written
    refused = _cli([model, "-i", str(bad), "-o", str(tmp_path / "refused.root"), *extra, "--step-size", "4"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    error = [line for line in refused.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"event {entry}:" in error[0] and "bad.root: entries" in error[0], refused.output
    assert not (tmp_path / "refused.root").exists()

    out = tmp_path / "skip.root"
    result = _cli([model, "-i", str(bad), "-o", str(out), *extra, "--step-size", "4", "--on-bad-event", "skip"])
    assert result.exit_code == 0, result.output
    assert "1 bad events skipped" in result.output and "1 bad events written with no objects" in result.output
    got, ref = read_output(out), read_output(tmp_path / "clean.root")
    assert len(got) == N_EVENTS and ak.to_list(got.entry) == list(range(N_EVENTS))
    counts = ak.to_numpy(ak.num(got[collection], axis=1))
    assert counts[entry] == 0 and ak.num(ref[collection], axis=1)[entry] > 0
    others = np.arange(N_EVENTS) != entry
    for f in ref[collection].fields:
        assert ak.array_equal(got[collection][f][others], ref[collection][f][others]), f
    for f in ("event_id", "entry"):
        assert ak.array_equal(got[f], ref[f])
    record = read_run_record(out)
    assert record["on_bad_event"] == "skip" and [s["entry"] for s in record["skipped_events"]] == [entry]
    assert record["skipped_events"][0]["reason"].startswith(reason), record["skipped_events"]
    assert record["n_events"] == N_EVENTS
    # a re-run in the same mode resumes; one that refuses bad events does not take the skip output for its own
    again = _cli([model, "-i", str(bad), "-o", str(out), *extra, "--step-size", "4", "--on-bad-event", "skip"])
    assert again.exit_code == 0 and "already complete" in again.output, again.output
    strict = _cli([model, "-i", str(bad), "-o", str(out), *extra, "--step-size", "4"])
    assert strict.exit_code == 1 and "not made by this run" in strict.output, strict.output


def test_on_bad_event_is_validated_as_an_argument(files, tmp_path):
    good, _ = files
    result = _cli(["mlpf-gnnlsh", "-i", str(good), "-o", str(tmp_path / "o"), "--on-bad-event", "drop"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "error: --on-bad-event 'drop': choose one of error, skip"]
    assert not (tmp_path / "o").exists()
