"""Both cores when asked (issue 20): ``hepzoo run --jobs N`` (one worker process per input file) gives the outputs
of a sequential run, in input order, and a failing file leaves no partial output and one line naming it;
``--threads 2`` (ONNX Runtime intra-op threads, the numba backend's batch split) gives the outputs of 1 thread
within tolerance."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from hepzoo.cli import app  # noqa: E402
from hepzoo.datasets import io  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402
from hepzoo.runtime.runfile import read_output, read_run_record  # noqa: E402
from hepzoo.runtime.runfile_jobs import JobFailed, run_files_jobs  # noqa: E402

MODEL = "mlpf-gnnlsh"
_VOLATILE = {"seconds", "wall_s", "elapsed_s", "date", "created", "started", "finished", "host", "pid"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, make_policy_events):
    """Three small event files in the schema (different sizes and seeds)."""
    folder = tmp_path_factory.mktemp("jobs")
    paths = []
    for k, (n, seed) in enumerate(((7, 1), (4, 2), (5, 3))):
        rng = np.random.default_rng(seed)
        events = make_policy_events(rng.integers(1, 30, n), rng.integers(1, 40, n), seed=seed)
        path = folder / f"in_{k}.root"
        with io.EventWriter(path) as writer:
            writer.write(events)
        paths.append(path)
    return paths


def _cli(*args):
    return CliRunner().invoke(app, ["run", MODEL, *args, "--no-progress"])


def _same_outputs(a, b):
    x, y = read_output(a), read_output(b)
    assert len(x) == len(y) > 0
    assert ak.to_list(x) == ak.to_list(y)
    ra, rb = read_run_record(a), read_run_record(b)
    assert {k: v for k, v in ra.items() if k not in _VOLATILE} == {k: v for k, v in rb.items() if k not in _VOLATILE}


def test_jobs_2_equals_a_sequential_run(inputs, tmp_path):
    args = [x for p in inputs[:2] for x in ("-i", str(p))]
    seq = _cli(*args, "-o", str(tmp_path / "seq"))
    assert seq.exit_code == 0, seq.output
    par = _cli(*args, "-o", str(tmp_path / "par"), "--jobs", "2")
    assert par.exit_code == 0, par.output
    outs = sorted(p.name for p in (tmp_path / "par").iterdir())
    assert outs == sorted(p.name for p in (tmp_path / "seq").iterdir()) and len(outs) == 2
    for name in outs:
        _same_outputs(tmp_path / "seq" / name, tmp_path / "par" / name)
    # the summary lists the inputs in input order, one output each
    lines = [line for line in par.output.splitlines() if " -> " in line]
    assert [line.split(" -> ")[0].strip() for line in lines] == [str(p) for p in inputs[:2]]
    assert "2 files run, 0 skipped" in par.output
    # a re-run with --jobs skips the complete outputs
    again = _cli(*args, "-o", str(tmp_path / "par"), "--jobs", "2")
    assert again.exit_code == 0 and "0 files run, 2 skipped" in again.output


def test_jobs_results_in_input_order_more_files_than_jobs(inputs, tmp_path):
    session = Session.load(MODEL)
    results = run_files_jobs(session, [str(p) for p in inputs], tmp_path / "o", jobs=2)
    assert [r.input for r in results] == [str(p) for p in inputs]
    assert [r.n_events for r in results] == [7, 4, 5] and not any(r.skipped for r in results)
    for r, p in zip(results, inputs, strict=True):
        assert len(read_output(r.output)) == io.num_entries(p)
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        run_files_jobs(session, [str(inputs[0])], tmp_path / "o", jobs=0)


def test_a_failing_file_leaves_no_partial_output_and_one_line(inputs, tmp_path, make_policy_events):
    bad = tmp_path / "bad.root"
    events = make_policy_events([3, 3, 3], [4, 4, 4], seed=9)
    energies = ak.to_numpy(ak.flatten(events.clu.e)).copy()
    energies[5] = -1.0  # entry 1: a negative cluster energy breaks the value policy
    clu = ak.with_field(events.clu, ak.unflatten(energies, ak.num(events.clu, axis=1)), "e")
    with io.EventWriter(bad) as writer:
        writer.write(ak.with_field(events, clu, "clu"))
    out = tmp_path / "out"
    result = _cli("-i", str(inputs[0]), "-i", str(bad), "-o", str(out), "--jobs", "2")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}: entries 0-2: ")
    assert "event 1: element 4" in errors[0] and "e = -1: negative" in errors[0]
    names = sorted(p.name for p in out.iterdir())
    assert not any("bad" in n for n in names) and not any(n.endswith(".tmp") or n.startswith(".") for n in names)
    for name in names:  # what is there is complete (the good file may have finished)
        assert read_run_record(out / name)["complete"]
    with pytest.raises(JobFailed, match=rf"^{bad}: entries 0-2: "):
        run_files_jobs(Session.load(MODEL), [str(bad)], tmp_path / "o2", jobs=2)


def test_jobs_option_errors():
    result = _cli("-i", "x.root", "-o", "o", "--jobs", "0")
    assert result.exit_code == 1 and "--jobs and --threads must be >= 1" in result.output
    result = _cli("-i", "x.root", "-o", "o", "--jobs", "2", "--dask")
    assert result.exit_code == 1 and "--jobs is for local worker processes" in result.output


def test_threads_2_matches_1_thread_onnxruntime(inputs, tmp_path):
    args = ["-i", str(inputs[0])]
    one = _cli(*args, "-o", str(tmp_path / "one.root"))
    two = _cli(*args, "-o", str(tmp_path / "two.root"), "--threads", "2")
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    a, b = read_output(tmp_path / "one.root"), read_output(tmp_path / "two.root")
    assert ak.to_list(a.mlpf.cls) == ak.to_list(b.mlpf.cls)
    for field in ("pt", "eta", "phi", "e"):
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(a.mlpf[field])), ak.to_numpy(ak.flatten(b.mlpf[field])),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["flashsim-jet", "mlpf-gnnlsh"])
def test_threads_2_matches_1_thread_numba(model, make_features):
    one = Session.load(model, backend="numba", intra_op_threads=1)
    two = Session.load(model, backend="numba", intra_op_threads=2)
    rng = np.random.default_rng(4)
    if one.family.elements:
        x, offsets = make_features(rng.integers(20, 100, 5), seed=4)
        a, b = one.run_elements(x, offsets), two.run_elements(x, offsets)
    else:
        inputs = {t.name: rng.standard_normal((9, t.shape[-1])).astype(np.float32) for t in one.card.inputs}
        a, b = one.backend.run(inputs), two.backend.run(inputs)
    assert two.backend._pool is not None and two.backend._split  # the batch was split over two threads
    assert one.backend._pool is None
    assert set(a) == set(b)
    for name in a:
        assert a[name].shape == b[name].shape
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
