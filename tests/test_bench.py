"""hepzoo bench machinery: FLOP counting, statistics and stopping rules, skip prediction, the results-file schema
(from a real tiny run in fresh processes) and the BENCHMARKS.md writer. No timing thresholds anywhere."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from scipy import stats
from typer.testing import CliRunner

from hepzoo.benchmarks import reference as bench_reference
from hepzoo.benchmarks import report as bench_report
from hepzoo.benchmarks.e2e import end_to_end
from hepzoo.benchmarks.flops import gemm_flops, matmul_flops, onnx_matmul_flops, torch_flops
from hepzoo.benchmarks.machine import fp32_flops_per_cycle, library_versions, machine_info
from hepzoo.benchmarks.matrix import _derive, _sizes, parse_elements, predict, run_benchmarks
from hepzoo.benchmarks.peak import measure_peaks, ort_sgemm_gflops, peak_for
from hepzoo.benchmarks.points import BenchSettings
from hepzoo.benchmarks.results import SCHEMA, load_results, validate_results
from hepzoo.benchmarks.timing import mean_ci, summarize, time_calls
from hepzoo.cli import app
from hepzoo.export.zoo import find_release


# ---- FLOPs -------------------------------------------------------------------------------------------------


def _gemm_matmul_graph() -> onnx.ModelProto:
    """x[batch, 8] -Gemm(W[4, 8], transB)-> [batch, 4] -MatMul(V[4, 3])-> y[batch, 3]."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 8], rng.standard_normal(32).astype(np.float32))
    v = helper.make_tensor("V", TensorProto.FLOAT, [4, 3], rng.standard_normal(12).astype(np.float32))
    b = helper.make_tensor("B", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="gemm", transB=1),
            helper.make_node("MatMul", ["h", "V"], ["y"], name="matmul"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, v, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_onnx_flops_match_a_hand_count_and_onnxruntime_runs_the_graph():
    model = _gemm_matmul_graph()
    got = onnx_matmul_flops(model, {"batch": 5})
    # Gemm: 2 * M(5) * N(4) * K(8); MatMul: 2 * 5 * 3 * 4
    assert got["by_op"] == {"Gemm": 2 * 5 * 4 * 8, "MatMul": 2 * 5 * 3 * 4}
    assert got["flops"] == 440
    assert onnx_matmul_flops(model, {"batch": 50})["flops"] == 4400  # linear in the batch
    import onnxruntime as ort

    y = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.ones((5, 8), np.float32)})[0]
    assert y.shape == (5, 3)  # the counted shapes are the ones the graph really has


def test_onnx_flops_name_a_missing_axis():
    with pytest.raises(ValueError, match=r"input 'x' has symbolic axis 'batch'"):
        onnx_matmul_flops(_gemm_matmul_graph(), {"elements": 3})


def test_matmul_and_gemm_formulas():
    assert matmul_flops([7], [7, 3]) == 2 * 3 * 7  # vector x matrix
    assert matmul_flops([2, 5, 7], [7]) == 2 * 2 * 5 * 7  # matrix x vector
    assert matmul_flops([2, 1, 4, 6], [3, 6, 5]) == 2 * (2 * 3) * 4 * 5 * 6  # broadcast batch dims
    assert gemm_flops([6, 4], [5, 6], trans_a=True, trans_b=True) == 2 * 4 * 5 * 6
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul_flops([2, 3], [4, 5])


@pytest.mark.parametrize("name, batch, n", [("mlpf-gnnlsh", 2, 256), ("mlpf-transformer", 2, 128), ("flashsim-jet", 7, 0)])
def test_onnx_count_agrees_with_torch_flop_counter_on_released_models(name, batch, n):
    """Two independent counts of the same model: the exported graph and torch's FlopCounterMode on the release."""
    from hepzoo.models import get_spec

    release = find_release(name)
    model = release.build_model()
    spec = get_spec(release.config["model"]["name"])
    inputs = spec.make_inputs(batch, n, 0)
    counted = torch_flops(lambda: model(*(inputs[k] for k in spec.input_names)))
    graph = onnx_matmul_flops(release.path / "model.onnx", {"batch": batch, "elements": n})["flops"]
    expected = counted
    if name == "mlpf-gnnlsh":  # torch has no formula for matrix x vector (d @ order_dir, one per layer)
        kw = {**spec.defaults, **release.config["model"]["kwargs"]}
        expected += kw["num_layers"] * 2 * batch * n * kw["dist_dim"]
    proto = onnx.load(str(release.path / "model.onnx"))
    if any(node.op_type == "MultiHeadAttention" for node in proto.graph.node):
        # ORT's contrib attention executes one more q.k dimension per head (the folded key padding bias)
        kw = {**spec.defaults, **release.config["model"]["kwargs"]}
        expected += kw["num_layers"] * 2 * batch * n * n * kw["num_heads"]
    assert graph == expected


# ---- statistics and stopping rules -------------------------------------------------------------------------


def test_mean_ci_matches_scipy_t_interval():
    x = np.array([1.0, 1.2, 0.9, 1.1, 1.05, 0.97])
    mean, half = mean_ci(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert half == pytest.approx((hi - lo) / 2)
    assert mean_ci([3.0]) == (3.0, math.inf)
    s = summarize(x)
    assert s["p50_s"] == pytest.approx(np.median(x)) and s["p50_s"] <= s["p99_s"] <= x.max()
    assert s["rel_ci95"] == pytest.approx(half / mean)


class FakeClock:
    """Each call() advances time by the next duration; reading the clock costs nothing."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = iter(durations)

    def __call__(self) -> float:
        return self.t

    def call(self) -> None:
        self.t += next(self.durations)


def _settings(**kw) -> BenchSettings:
    return BenchSettings.create(quick=False, **{"budget_s": 1.0, "warmup_s": 0.05, "min_reps": 5, **kw})


def test_time_calls_stops_on_a_tight_interval_after_a_quarter_of_the_budget():
    step = 1 / 64  # exact in binary: no rounding in the fake clock
    clock = FakeClock([step] * 10_000)
    timing = time_calls(clock.call, _settings(), clock=clock, cpu_clock=clock)
    assert timing.stop == "ci"
    assert timing.warmup_calls == 4  # 4 x 1/64 s is the first to reach the 0.05 s warm-up
    assert len(timing.samples) == 16  # identical calls: zero CI; 16/64 s = a quarter of the 1 s budget
    assert timing.samples == [step] * 16
    assert timing.cpu_s == pytest.approx(16 * step)


def test_time_calls_stops_on_the_budget_when_noisy_and_keeps_three_calls():
    noisy = [0.001, 0.2] * 5000  # the interval never closes
    clock = FakeClock(noisy)
    timing = time_calls(clock.call, _settings(), clock=clock, cpu_clock=clock)
    assert timing.stop == "budget"
    assert sum(timing.samples) >= 1.0 and sum(timing.samples[:-1]) < 1.0
    slow = FakeClock([0.6] * 20)  # a call longer than half the budget: still at least 3 timed calls
    timing = time_calls(slow.call, _settings(), clock=slow, cpu_clock=slow)
    assert timing.stop == "budget" and len(timing.samples) == 3
    capped = FakeClock([0.001, 0.2] * 5000)
    assert time_calls(capped.call, _settings(max_reps=7), clock=capped, cpu_clock=capped).stop == "max_reps"


def test_prediction_extrapolates_the_last_two_points():
    done = [(256, {"status": "ok", "mean_s": 1.0}), (512, {"status": "ok", "mean_s": 4.0})]
    assert predict(done, 1024, "mean_s", 1.0, 2.2, 2.0) == pytest.approx(16.0)  # quadratic
    assert predict(done, 1024, "mean_s", 1.0, 1.5, 2.0) == pytest.approx(4.0 * 2**1.5)  # clamped
    assert predict(done[:1], 1024, "mean_s", 1.0, 2.2, 1.0) == pytest.approx(4.0)  # one point: `first`
    assert predict(done[:1], 1024, "mean_s", 1.0, 2.2, None) is None
    assert predict([], 1024, "mean_s", 1.0, 2.2, 2.0) is None


@pytest.mark.parametrize(
    "vendor, family, model, flags, expected",
    [
        ("AuthenticAMD", 0x19, 0x11, {"avx2", "fma", "avx512f"}, 32),  # Zen 4: AVX-512 on 256-bit pipes
        ("AuthenticAMD", 0x17, 0x01, {"avx2", "fma"}, 16),  # Zen 1
        ("GenuineIntel", 6, 85, {"avx2", "fma", "avx512f"}, 64),
        ("GenuineIntel", 6, 60, {"avx", "avx2", "fma"}, 32),
        ("GenuineIntel", 6, 26, {"sse4_2"}, 8),
    ],
)
def test_flops_per_cycle_table(vendor, family, model, flags, expected):
    per_cycle, why = fp32_flops_per_cycle(vendor, family, model, flags)
    assert per_cycle == expected and why


def test_machine_info_records_how_the_peak_was_estimated():
    m = machine_info()
    assert m["usable_cpus"] >= 1 and m["peak_method"] and m["flops_per_cycle_reason"]
    if m["freq_ghz"]:
        assert m["peak_gflops"] == pytest.approx(m["usable_cpus"] * m["freq_ghz"] * m["fp32_flops_per_cycle"])


def test_measured_sgemm_peak_is_positive_and_finite():
    peaks = measure_peaks([2, 1, 1], n=96, repeats=2)
    assert set(peaks["gflops"]) == {"1", "2"} and peaks["n"] == 96 and "MatMul" in peaks["method"]
    for t in (1, 2):
        value = peak_for(peaks, t)
        assert value is not None and math.isfinite(value) and value > 0
        # the peak is the best library at that thread count
        assert value == max(lib[str(t)] for lib in peaks["by_library"].values() if str(t) in lib)
    assert set(peaks["by_library"]["onnxruntime"]) == {"1", "2"}
    assert peak_for(peaks, 3) is None and peak_for(None, 1) is None
    assert peak_for({"gflops": {"1": 0.0}}, 1) is None and peak_for({"gflops": {"1": math.nan}}, 1) is None
    assert 0 < ort_sgemm_gflops(1, n=64, repeats=1) < math.inf


def test_percent_of_peak_uses_the_measured_peak():
    rec = {"mean_s": 0.5, "batch": 2, "objects_per_call": 10, "flops_per_call": 4e10, "threads": 1}
    _derive(rec, 40.0, 100.0)
    assert rec["gflops_per_s"] == pytest.approx(80.0)
    assert rec["fraction_of_peak"] == pytest.approx(2.0) and rec["fraction_of_nominal_peak"] == pytest.approx(0.8)
    _derive(rec, None, None)
    assert rec["fraction_of_peak"] is None and rec["fraction_of_nominal_peak"] is None


# ---- a real tiny run: results file and markdown ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    settings = BenchSettings.create(quick=True, budget_s=0.05, warmup_s=0.01)
    results = run_benchmarks(
        ["flashsim-jet", "mlpf-gnnlsh"],
        ["torch-eager", "onnxruntime-cpu"],
        settings,
        out=out,
        sizes={"flashsim": [("batch", 1, None), ("batch", 100, None)], "mlpf": [("elements", 1, 256)]},
        log=lambda line: None,
    )
    return results, out


def test_tiny_run_writes_a_valid_results_file(tiny_results):
    results, out = tiny_results
    assert load_results(out) == json.loads(json.dumps(results))  # the file is what was returned
    validate_results(results)
    recs = results["records"]
    assert [(r["model"], r["backend"], r["batch"], r["n_elements"]) for r in recs] == [
        ("flashsim-jet", "torch-eager", 1, None),
        ("flashsim-jet", "torch-eager", 100, None),
        ("flashsim-jet", "onnxruntime-cpu", 1, None),
        ("flashsim-jet", "onnxruntime-cpu", 100, None),
        ("mlpf-gnnlsh", "torch-eager", 1, 256),
        ("mlpf-gnnlsh", "onnxruntime-cpu", 1, 256),
    ]
    assert all(r["status"] == "ok" for r in recs), [r.get("reason") for r in recs]
    for r in recs:
        assert r["reps"] >= 3 and r["events_per_s"] == pytest.approx(r["batch"] / r["mean_s"])
        assert r["peak_rss_mb"] >= r["rss_setup_mb"] > 0 and r["peak_delta_mb"] >= 0
        dims = {"batch": r["batch"], "elements": r["n_elements"] or 0}
        flops = onnx_matmul_flops(find_release(r["model"]).path / "model.onnx", dims)["flops"]
        assert r["flops_per_call"] == flops and r["flops_per_event"] == pytest.approx(flops / r["batch"])
        assert r["gflops_per_s"] == pytest.approx(flops / r["mean_s"] / 1e9)
    mlpf = [r for r in recs if r["family"] == "mlpf"]
    assert all(r["objects_per_call"] == 256 for r in mlpf)  # one full event of 256 elements
    parity = {(p["model"], p["backend"]): p for p in results["parity"]}
    assert set(parity) == {("flashsim-jet", "onnxruntime-cpu"), ("mlpf-gnnlsh", "onnxruntime-cpu")}
    assert all(p["within_tolerance"] for p in parity.values())
    assert results["versions"]["torch"] and results["machine"]["cpu"]
    # % peak of every point: its GFLOP/s over the GEMM peak measured in the same run at its thread count
    peak = peak_for(results["peak"], settings_threads := results["settings"]["threads"])
    assert peak is not None and math.isfinite(peak) and peak > 0
    assert "1" in results["peak"]["gflops"] and results["methods"]["peak"] == results["peak"]["method"]
    for r in recs:
        assert r["threads"] == settings_threads
        assert r["fraction_of_peak"] == pytest.approx(r["gflops_per_s"] / peak)


def test_results_schema_rejects_a_broken_record(tiny_results):
    results, _ = tiny_results
    broken = copy.deepcopy(results)
    del broken["records"][2]["mean_s"]
    with pytest.raises(ValueError, match=r"records\[2\].*'mean_s'"):
        validate_results(broken)
    broken = copy.deepcopy(results)
    broken["records"][0].update(status="skipped", reason=None)
    with pytest.raises(ValueError, match="needs a reason"):
        validate_results(broken)


def _table_rows(section: str, title: str) -> list[list[str]]:
    block = section.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]
    return [r for r in rows[1:] if not all(re.fullmatch(r"-+:?", c) for c in r)]  # drop header and alignment


def test_markdown_round_trip_keeps_other_sections(tiny_results, tmp_path):
    results, out = tiny_results
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- other:begin -->\nother section\n<!-- other:end -->\n\ntrailing text\n")
    plots = bench_report.write_report(results, md, tmp_path / "benchmarks")
    first = md.read_text()
    bench_report.write_report(results, md, tmp_path / "benchmarks")
    assert md.read_text() == first  # idempotent: the section is replaced, not appended again
    assert "<!-- other:begin -->\nother section\n<!-- other:end -->" in first and "trailing text" in first
    assert first.count(bench_report.BEGIN) == 1 and first.count(bench_report.END) == 1
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](benchmarks/{path.name})" in first  # linked relative to the markdown file
    # the numbers in the tables are the numbers in the results
    rows = _table_rows(first, "flashsim-jet 1")
    for rec, row in zip([r for r in results["records"] if r["model"] == "flashsim-jet"], rows, strict=True):
        assert row[0] == rec["label"] and int(row[1]) == rec["batch"]
        assert float(row[2].replace(",", "")) == pytest.approx(rec["objects_per_s"], rel=5e-3)
        assert float(row[4]) == pytest.approx(1e3 * rec["p50_s"], rel=5e-3)
    assert "- Measured peak (100 % of the % peak columns): " in first and "not used for % peak" in first
    mlpf_rows = _table_rows(first, "mlpf-gnnlsh")
    mlpf_recs = [r for r in results["records"] if r["model"] == "mlpf-gnnlsh"]
    for rec, row in zip(mlpf_recs, mlpf_rows, strict=True):
        assert rec["fraction_of_peak"] is not None  # the report prints it with two significant digits
        assert float(row[-1].rstrip("%")) == pytest.approx(100 * rec["fraction_of_peak"], rel=0.051)
    tagged = bench_report.write_report(results, md, tmp_path / "benchmarks", tag="gpu-test")
    both = md.read_text()
    assert both.startswith(first.rstrip("\n")) and "<!-- runtime-benchmark-gpu-test:begin -->" in both  # a second section
    assert all(p.name.startswith("gpu-test_") for p in tagged.values())
    ratio = {(r[0], r[1]): r[2:] for r in _table_rows(first, "Flash-sim: throughput ratio")}
    by = {(r["backend"], r["batch"]): r["events_per_s"] for r in results["records"] if r["model"] == "flashsim-jet"}
    assert float(ratio[("flashsim-jet", "onnxruntime-cpu")][0]) == pytest.approx(
        by[("onnxruntime-cpu", 1)] / by[("torch-eager", 1)], abs=0.006
    )


def test_skipped_and_failed_points_are_reported_with_their_reason(tiny_results):
    results = copy.deepcopy(tiny_results[0])
    results["records"][1].update(status="skipped", reason="predicted 9.0 s per call > max_call_s 8 s")
    text = bench_report.render_section(results)
    assert "skipped: predicted 9.0 s per call > max_call_s 8 s" in text
    assert re.search(r"\| flashsim-jet \| onnxruntime-cpu \| [0-9.]+ \| — \|", text)  # no ratio without the reference


# ---- reference, CLI, end to end ----------------------------------------------------------------------------


def test_reference_config_matches_the_release_sizes():
    for name in ("mlpf-gnnlsh", "mlpf-transformer"):
        kw = find_release(name).config["model"]["kwargs"]
        cfg = bench_reference.reference_config(name, kw)
        sub = cfg[cfg["type"]]
        assert sub["num_convs"] == kw["num_layers"] and cfg["notes"]
        if name == "mlpf-gnnlsh":
            assert (sub["embedding_dim"], sub["bin_size"], sub["distance_dim"]) == (kw["width"], kw["bin_size"], kw["dist_dim"])
            assert sub["max_num_bins"] >= bench_reference.MAX_ELEMENTS // kw["bin_size"]
        else:
            assert sub["num_heads"] * sub["head_dim"] == kw["width"] and sub["num_heads"] == kw["num_heads"]
    with pytest.raises(ValueError, match="no particleflow reference"):
        bench_reference.reference_config("flashsim-jet", {})


@pytest.mark.skipif(not bench_reference.available()[0], reason="particleflow not installed (make bench installs it)")
def test_particleflow_reference_runs_on_our_inputs():
    import torch

    from hepzoo.models.mlpf_common import make_mlpf_inputs

    model, info = bench_reference.build_reference("mlpf-gnnlsh", {"width": 32, "num_layers": 1, "bin_size": 64})
    x = make_mlpf_inputs(1, 128, 0)
    with torch.inference_mode():
        out = model(x["features"], x["mask"])
    assert out[1].shape == (1, 128, 6) and out[2].shape == (1, 128, 5)
    assert info["architecture"]["gnn_lsh"]["embedding_dim"] == 32


def test_cli_rejects_an_unknown_backend_by_name():
    result = CliRunner().invoke(app, ["bench", "flashsim-jet", "--backends", "no-such-backend", "--quick"])
    assert result.exit_code == 1
    assert "no-such-backend" in result.output and "onnxruntime-cpu" in result.output


def test_elements_option_replaces_the_one_event_sizes_and_refuses_bad_counts():
    assert parse_elements("32768, 1024,4096,1024") == (1024, 4096, 32768)
    assert parse_elements(None) is None and parse_elements(" ") is None
    sizes = _sizes("mlpf", quick=False, elements=(4096, 1024))
    assert sizes[:2] == [("elements", 1, 1024), ("elements", 1, 4096)] and sizes[-1][0] == "batched" and len(sizes) == 3
    default = [n for kind, _, n in _sizes("mlpf", quick=False) if kind == "elements"]
    assert default[-1] == 32768 == bench_reference.MAX_ELEMENTS  # the reference's LSH codebook is sized for it
    assert _sizes("flashsim", quick=False, elements=(1024,)) == _sizes("flashsim", quick=False)
    for bad in ("0", "1024,x", "-5", str(bench_reference.MAX_ELEMENTS + 1)):
        with pytest.raises(ValueError, match="--elements"):
            parse_elements(bad)
    result = CliRunner().invoke(app, ["bench", "mlpf-gnnlsh", "--elements", "1024,abc"])
    assert result.exit_code != 0 and "'abc' is not an element count" in result.output


def test_end_to_end_reports_when_unavailable_or_missing_input(tmp_path):
    from hepzoo.runtime import Session

    if not hasattr(Session, "run_file"):
        assert end_to_end(tmp_path / "x.root")["status"] == "unavailable"
    else:
        with pytest.raises(FileNotFoundError, match="x.root"):
            end_to_end(tmp_path / "x.root")


@pytest.mark.slow
def test_end_to_end_parts_and_run_file(tmp_path):
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec
    from hepzoo.runtime import Session

    if not hasattr(Session, "run_file"):
        pytest.skip("Session.run_file is not in this checkout")
    data = tmp_path / "ttbar.root"
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=12, seed=3, chunk_size=12), data, progress=False)
    e2e = end_to_end(data, "mlpf-gnnlsh", backend="onnxruntime-cpu", repeats=1, step_size=5)
    assert e2e["status"] == "ok" and e2e["events"] == 12
    assert [p["step"] for p in e2e["parts"]] == ["read (uproot)", "compute (Session.run)", "write (uproot)"]
    assert e2e["sum_s"] == pytest.approx(sum(p["seconds"] for p in e2e["parts"]))
    assert e2e["run_s"] > 0 and e2e["overhead"] == pytest.approx(e2e["run_s"] / e2e["sum_s"] - 1)
    section = bench_report.render_section({**_minimal_results(), "end_to_end": e2e})
    assert "Runtime overhead over the sum of the parts" in section


def _minimal_results() -> dict:
    return {
        "schema": SCHEMA,
        "date": "today",
        "command": "hepzoo bench",
        "machine": machine_info(),
        "versions": library_versions(),
        "settings": dataclasses.asdict(BenchSettings.create()),
        "methods": {k: k for k in ("timing", "isolation", "memory", "flops", "inputs")},
        "reference": {"available": False, "detail": "not installed", "models": {}},
        "parity": [],
        "records": [],
    }


def test_bench_help_has_an_example():
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
