"""Seeded damaged inputs through ``hepzoo run mlpf-gnnlsh`` (our layout, a Pythia ttbar sample): NaN/inf/huge/
negative track pT and cluster energy, a non-integer track charge, a counter that disagrees with its branches, an
empty event list, truncations, bit flips, empty and non-ROOT files. Each case must end either in one line on
stderr (exit 1, no traceback, nothing left in the output folder) or in output identical to the undamaged file's."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepzoo.datasets import io

from damage import bit_flipper, edit_flat

SEED = 23
N_EVENTS = 6


@pytest.fixture(scope="module")
def ttbar(tmp_path_factory):
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    path = tmp_path_factory.mktemp("mlpf_damage") / "ttbar.root"
    assert generate(GenerationConfig(SourceSpec("ttbar"), n_events=N_EVENTS, seed=SEED), path, progress=False) == N_EVENTS
    return path


def _run(path, out):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    return CliRunner().invoke(app, ["run", "mlpf-gnnlsh", "-i", str(path), "-o", str(out), "--no-progress"])


def _cases(chunk: ak.Array, rng, write_raw, schema_arrays):
    """(name, function writing the damaged file from (good path, out path)); write_raw and schema_arrays are
    conftest's fixtures."""
    n_trk = int(ak.sum(ak.num(chunk.trk)))
    n_clu = int(ak.sum(ak.num(chunk.clu)))
    t, c = int(rng.integers(0, n_trk)), int(rng.integers(0, n_clu))

    def field(prefix: str, name: str, value, row: int, dtype=None):
        def write(good, path):
            coll = chunk[prefix]
            fields = {f: coll[f] for f in coll.fields}
            fields[name] = edit_flat(coll[name], row, value, dtype)
            write_raw(path, "events", schema_arrays(chunk, override={prefix: ak.zip(fields)}),
                      field_name=lambda o, i: f"{o}_{i}", counter_name=lambda o: f"n{o}")  # fmt: skip
        return write

    def raw_bytes(fn):
        return lambda good, path: path.write_bytes(fn(good.read_bytes()))

    def counter_mismatch(good, path):
        arrays = schema_arrays(chunk)
        trk = arrays.pop("trk")
        arrays.update({f"trk_{f}": trk[f] for f in trk.fields})
        arrays["ntrk"] = ak.to_numpy(ak.num(trk)).astype(np.int32) + 1  # the counter says one track more
        write_raw(path, "events", arrays)

    cases = [
        ("nan-track-pt", field("trk", "pt", np.nan, t)),
        ("inf-track-pt", field("trk", "pt", np.inf, t)),
        ("huge-track-pt", field("trk", "pt", 3e38, t)),
        ("negative-track-pt", field("trk", "pt", -20.0, t)),
        ("negative-cluster-e", field("clu", "e", -5.0, c)),
        ("huge-cluster-e", field("clu", "e", 1e30, c)),
        ("float-track-charge", field("trk", "charge", 0.5, t, np.float32)),
        ("counter-mismatch", counter_mismatch),
        ("empty-file", raw_bytes(lambda data: b"")),
        ("not-root", raw_bytes(lambda data: b"\x89PNG\r\n" + b"\0" * 500)),
    ]
    for k in range(2):
        cut = int(rng.integers(64, 4000))
        cases.append((f"truncated-{k}", raw_bytes(lambda data, cut=cut: data[: len(data) - cut])))
    for k in range(4):
        cases.append((f"bitflip-{k}", raw_bytes(bit_flipper(int(rng.integers(0, 2**31))))))
    return cases


def test_mlpf_run_damaged_inputs_fail_on_one_line_or_change_nothing(ttbar, tmp_path, write_raw, schema_arrays):
    from hepzoo.runtime.runfile import read_output

    result = _run(ttbar, tmp_path / "good_out.root")
    assert result.exit_code == 0, result.output
    reference = read_output(tmp_path / "good_out.root")
    chunk = io.read_events(ttbar)
    row = {"cases": 0, "one-line errors": 0, "identical": 0, "silent changes": 0, "tracebacks": 0, "leftovers": 0}
    for name, write in _cases(chunk, np.random.default_rng(SEED), write_raw, schema_arrays):
        case_dir = tmp_path / name
        case_dir.mkdir()
        path = case_dir / "in.root"
        write(ttbar, path)
        out = case_dir / "out"
        result = _run(path, out)
        lines = [line for line in result.output.splitlines() if line.strip()]
        row["cases"] += 1
        assert "Traceback" not in result.output, (name, result.output)
        if result.exit_code == 0:
            got = read_output(out / "in.mlpf-gnnlsh.root")
            same = all(ak.array_equal(got[f], reference[f]) for f in reference.fields if f.startswith("mlpf"))
            assert same, f"{name}: exit 0 with a different output (a silent change)"
            row["identical"] += 1
        else:
            errors = [line for line in lines if line.startswith("error: ")]
            assert result.exit_code == 1 and len(errors) == 1 and lines[-1] == errors[0], (name, result.output)
            assert len(lines) <= 2, (name, result.output)  # at most the "model on backend" line before it
            row["one-line errors"] += 1
            row["leftovers"] += len(list(out.iterdir())) if out.exists() else 0
            row["leftovers"] += len([p for p in case_dir.iterdir() if p.name not in ("in.root", "out")])
    print(f"run mlpf-gnnlsh/native: {row}")  # the damaged-input table (pytest -s)
    assert row["silent changes"] == 0 and row["leftovers"] == 0, row
    # every value-level damage and every unreadable file is refused
    assert row["one-line errors"] >= 10 and row["one-line errors"] + row["identical"] == row["cases"], row
