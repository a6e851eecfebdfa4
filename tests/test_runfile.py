"""ROOT in -> ROOT out (Session.run_file, hepzoo run): values, order, chunk independence, resume, bad input."""

from __future__ import annotations

import shutil

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from hepzoo.cli import app  # noqa: E402
from hepzoo.datasets import io  # noqa: E402
from hepzoo.datasets.generate import GenerationConfig, generate  # noqa: E402
from hepzoo.datasets.sources import SourceSpec  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402
from hepzoo.runtime.runfile import read_output, read_run_record, run_files  # noqa: E402
from hepzoo.runtime.runfile_dask import run_files_dask  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Two small ttbar files (Pythia8 + detector sim), seeded."""
    folder = tmp_path_factory.mktemp("runfile")
    paths = []
    for k, n in ((0, 23), (1, 11)):
        path = folder / f"ttbar_{k}.root"
        generate(GenerationConfig(SourceSpec("ttbar"), n_events=n, seed=50 + k, chunk_size=12), path, progress=False)
        paths.append(path)
    return paths


def _tree(path) -> ak.Array:
    return read_output(path)


def _leftovers(folder) -> list:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_mlpf_output_equals_session_run_and_keeps_order(sample, tmp_path):
    sess = Session.load("mlpf-transformer")
    result = sess.run_file(sample[0], tmp_path / "out.root", step_size=5)
    assert (result.n_events, result.skipped) == (23, False)
    out = _tree(tmp_path / "out.root")
    events = io.read_events(sample[0])
    expected = sess.run(events)
    assert len(out) == len(events) == 23
    np.testing.assert_array_equal(out.event_id, events.event_id)
    np.testing.assert_array_equal(out.entry, np.arange(23))
    assert ak.to_list(out.mlpf.cls) == ak.to_list(expected.cls)
    for field in ("pt", "eta", "phi", "e"):
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(out.mlpf[field])), ak.to_numpy(ak.flatten(expected[field])),
                                   rtol=1e-4, atol=1e-4)
    record = read_run_record(tmp_path / "out.root")
    assert record["complete"] and record["model"] == "mlpf-transformer" and record["n_events"] == 23
    assert record["onnx_sha256"] == sess.card.onnx.sha256 and record["seed"] is None
    # chunking does not change anything
    sess.run_file(sample[0], tmp_path / "whole.root", step_size=1000)
    whole = _tree(tmp_path / "whole.root")
    assert ak.to_list(whole.mlpf) == ak.to_list(out.mlpf)


def test_flashsim_reproducible_chunk_independent_and_seed_recorded(sample, tmp_path):
    sess = Session.load("flashsim-jet")
    sess.run_file(sample[0], tmp_path / "a.root", seed=5, step_size=4)
    sess.run_file(sample[0], tmp_path / "b.root", seed=5, step_size=1000)
    sess.run_file(sample[0], tmp_path / "c.root", seed=6)
    a, b, c = (_tree(tmp_path / f"{k}.root") for k in "abc")
    assert ak.to_list(a.flashjet) == ak.to_list(b.flashjet)
    assert ak.to_list(a.flashjet.pt) != ak.to_list(c.flashjet.pt)
    assert set(np.unique(a.flash_seed)) == {5} and read_run_record(tmp_path / "a.root")["seed"] == 5
    # physics sanity: flash jets sit near their generator jets (|Δη| small) and have positive pT
    assert ak.all(a.flashjet.pt > 0)
    with pytest.raises(ValueError, match="generative: give a seed"):
        sess.run_file(sample[0], tmp_path / "d.root")


def test_flashsim_runs_on_generator_level_files(sample, tmp_path):
    """No reco collections in the input (the flash-sim use case): only the context collections are read."""
    events = io.read_events(sample[1], collections=["gen", "genjet"])
    gen_only = tmp_path / "gen_only.root"
    with io.EventWriter(gen_only) as writer:
        writer.write(events)
    sess = Session.load("flashsim-track")
    sess.run_file(gen_only, tmp_path / "tracks_gen_only.root", seed=2)
    sess.run_file(sample[1], tmp_path / "tracks_full.root", seed=2)
    assert ak.to_list(_tree(tmp_path / "tracks_gen_only.root").flashtrk) == ak.to_list(_tree(tmp_path / "tracks_full.root").flashtrk)


def test_resume_skips_complete_outputs_and_refuses_foreign_ones(sample, tmp_path):
    sess = Session.load("flashsim-track")
    first = run_files(sess, [str(p) for p in sample], tmp_path / "out", seed=1)
    assert [r.skipped for r in first] == [False, False]
    outputs = sorted((tmp_path / "out").glob("*.root"))
    assert [p.name for p in outputs] == ["ttbar_0.flashsim-track.root", "ttbar_1.flashsim-track.root"]
    stamps = [p.stat().st_mtime_ns for p in outputs]
    again = run_files(sess, str(sample[0].parent / "ttbar_*.root"), tmp_path / "out", seed=1)
    assert [r.skipped for r in again] == [True, True]
    assert [p.stat().st_mtime_ns for p in outputs] == stamps
    with pytest.raises(FileExistsError, match="not made by this run"):
        run_files(sess, [str(p) for p in sample], tmp_path / "out", seed=2)
    replaced = run_files(sess, [str(p) for p in sample], tmp_path / "out", seed=2, overwrite=True)
    assert [r.skipped for r in replaced] == [False, False]
    assert read_run_record(outputs[0])["seed"] == 2
    with pytest.raises(ValueError, match="several inputs"):
        run_files(sess, [str(p) for p in sample], tmp_path / "one.root", seed=1)


def test_bad_input_names_file_and_entry_and_leaves_nothing(sample, tmp_path):
    events = io.read_events(sample[0])
    pt = ak.to_numpy(ak.flatten(events.trk.pt)).copy()
    first_track_of_7 = int(ak.sum(ak.num(events.trk, axis=1)[:7]))
    pt[first_track_of_7] = np.nan
    broken = ak.with_field(events, ak.with_field(events.trk, ak.unflatten(pt, ak.num(events.trk, axis=1)), "pt"), "trk")
    bad = tmp_path / "nan.root"
    with io.EventWriter(bad) as writer:
        writer.write(broken)
    out = tmp_path / "out"
    out.mkdir()
    sess = Session.load("mlpf-gnnlsh")
    with pytest.raises(ValueError, match=r"nan\.root: entries 5-9: event 7: element 0 has a non-finite value nan in feature 'pt'"):
        sess.run_file(bad, out / "nan_out.root", step_size=5)
    assert list(out.iterdir()) == []  # nothing half-written
    # a truncated file and a file with zero events: clear errors, nothing written
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(sample[0].read_bytes()[: sample[0].stat().st_size // 2])
    with pytest.raises(io.SchemaError, match="truncated"):
        sess.run_file(truncated, out / "t.root")
    empty = tmp_path / "empty.root"
    io.EventWriter(empty).close()
    with pytest.raises(io.SchemaError, match="empty"):
        sess.run_file(empty, out / "e.root")
    assert list(out.iterdir()) == [] and _leftovers(tmp_path) == []


def test_dask_gives_the_same_outputs_as_one_process(sample, tmp_path):
    sess = Session.load("flashsim-jet")
    run_files(sess, [str(p) for p in sample], tmp_path / "local", seed=9, step_size=4)
    results = run_files_dask(sess, [str(p) for p in sample], tmp_path / "dask", n_workers=2, seed=9)
    assert [r.n_events for r in results] == [23, 11]
    for p in sample:
        name = f"{p.stem}.flashsim-jet.root"
        local, distributed = _tree(tmp_path / "local" / name), _tree(tmp_path / "dask" / name)
        assert ak.to_list(local) == ak.to_list(distributed)


def test_cli_run_prints_summary_and_skips_on_rerun(sample, tmp_path):
    runner = CliRunner()
    args = ["run", "mlpf-gnnlsh", "-i", str(sample[1]), "-o", str(tmp_path / "o"), "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "11 events" in first.output and "1 files run, 0 skipped" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "0 files run, 1 skipped" in second.output
    missing = runner.invoke(app, ["run", "mlpf-gnnlsh", "-i", str(tmp_path / "nope*.root"), "-o", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "no file matches" in missing.output


def test_run_file_into_a_copy_of_a_release_folder(sample, tmp_path):
    """A release given by folder works the same as by name (the output records the same model)."""
    folder = tmp_path / "release"
    shutil.copytree(Session.load("flashsim-jet").folder, folder, ignore=shutil.ignore_patterns("weights.pt", "*.jsonl"))
    sess = Session.load(folder)
    sess.run_file(sample[1], tmp_path / "x.root", seed=1)
    assert read_run_record(tmp_path / "x.root")["model"] == "flashsim-jet"


def test_delphes_layout_input_single_process_and_dask(tmp_path, delphes_file):
    """Another producer's layout (Delphes branches through DELPHES_MAPPING): MLPF output equals running the
    session on the mapped events, and the Dask path (mapping shipped to the workers) gives the same file."""
    from hepzoo.datasets.mapping import DELPHES_MAPPING

    source = tmp_path / "delphes.root"
    delphes_file(source, n=6, seed=3, physical=True)
    sess = Session.load("mlpf-gnnlsh")
    run_files(sess, str(source), tmp_path / "local", mapping=DELPHES_MAPPING)
    run_files_dask(sess, str(source), tmp_path / "dask", n_workers=1, mapping=DELPHES_MAPPING)
    local = _tree(tmp_path / "local" / "delphes.mlpf-gnnlsh.root")
    expected = sess.run(io.read_events(source, mapping=DELPHES_MAPPING))
    assert len(local) == 6 and ak.to_list(local.mlpf.cls) == ak.to_list(expected.cls)
    assert ak.to_list(_tree(tmp_path / "dask" / "delphes.mlpf-gnnlsh.root")) == ak.to_list(local)
