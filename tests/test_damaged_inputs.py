"""Seeded damaged inputs through ``hepzoo run flashsim-jet``, over our layout and the Delphes and NanoAOD
layouts: truncations, bit flips, a non-ROOT file, an empty file, NaN/inf/huge/negative values, dtype changes.
Each case must end either in one line on stderr (exit 1, no traceback, nothing left in the output folder) or
in output identical to the undamaged file's."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepzoo.datasets import io
from hepzoo.datasets.mapping import DELPHES_MAPPING

from damage import bit_flipper, edit_flat
from foreign_files import generator_events, write_delphes_uproot, write_nanoaod_uproot

SEED = 17
LAYOUTS = {"native": [], "delphes": ["--layout", "delphes"], "nanoaod": ["--layout", "nanoaod"]}


def _run(path, out, layout):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    args = ["run", "flashsim-jet", "-i", str(path), "-o", str(out), "--seed", "3", "--no-progress", *LAYOUTS[layout]]
    return CliRunner().invoke(app, args)


def _write(layout, path, events, override=None, write_raw=None, schema_arrays=None):
    if layout == "delphes":
        return write_delphes_uproot(path, events, override={f"Particle.{k}": v for k, v in (override or {}).items()})
    if layout == "nanoaod":
        names = {"PT": "GenPart_pt", "PID": "GenPart_pdgId"}
        return write_nanoaod_uproot(path, events, override={names[k]: v for k, v in (override or {}).items()})
    staging = write_delphes_uproot(path.with_suffix(".d.root"), events)
    mapped = io.read_events(staging, mapping=DELPHES_MAPPING, collections=["gen", "genjet"])
    staging.unlink()
    if not override:
        with io.EventWriter(path) as writer:
            writer.write(mapped)
        return path
    # our layout with a changed branch (dtype or values): written raw, as a foreign producer could (with conftest's
    # write_raw and schema_arrays, which the tests pass on)
    names = {"PT": "pt", "PID": "pid"}
    gen = {f: mapped.gen[f] for f in mapped.gen.fields}
    gen.update({names[k]: v[events["status"] == 1] for k, v in override.items()})  # our gen: stable only
    arrays = schema_arrays(mapped, override={"gen": ak.zip(gen)})
    write_raw(path, "events", arrays, field_name=lambda o, i: f"{o}_{i}", counter_name=lambda o: f"n{o}")
    return path


def _cases(events, rng):
    """(name, override of Particle fields or None, byte-level damage or None)."""
    n = int(ak.sum(ak.num(events["pt"])))
    row = int(rng.integers(0, n))
    cases = [
        ("nan-pt", {"PT": edit_flat(events["pt"], row, np.nan, np.float32)}, None),
        ("inf-pt", {"PT": edit_flat(events["pt"], row, np.inf, np.float32)}, None),
        ("huge-pt", {"PT": edit_flat(events["pt"], row, 3e38, np.float32)}, None),
        ("negative-pt", {"PT": edit_flat(events["pt"], row, -20.0, np.float32)}, None),
        ("int8-pt", {"PT": edit_flat(events["pt"], row, 1, np.int8)}, None),
        ("fractional-pid", {"PID": edit_flat(events["pid"], row, 211.5, np.float32)}, None),
        ("empty-file", None, lambda data: b""),
        ("not-root", None, lambda data: b"col1,col2\n1,2\n" * 50),
    ]
    for k in range(3):
        cut = int(rng.integers(64, 4000))
        cases.append((f"truncated-{k}", None, lambda data, cut=cut: data[: len(data) - cut]))
    for k in range(6):
        cases.append((f"bitflip-{k}", None, bit_flipper(int(rng.integers(0, 2**31)))))
    return cases


def _case_file(case_dir, layout, events, good, override, damage, write_raw, schema_arrays):
    """Write one case's damaged input ``case_dir/in.root``: re-written with ``override``, or ``good``'s bytes damaged."""
    case_dir.mkdir()
    path = case_dir / "in.root"
    if override is not None:
        _write(layout, path, events, override, write_raw, schema_arrays)
    else:
        path.write_bytes(damage(good.read_bytes()))
    return case_dir, path


@pytest.fixture(scope="module")
def events():
    return generator_events(n_events=10, seed=SEED)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_damaged_inputs_fail_on_one_line_or_change_nothing(layout, events, tmp_path, write_raw, schema_arrays):
    from hepzoo.runtime.runfile import read_output

    good = _write(layout, tmp_path / "good.root", events)
    result = _run(good, tmp_path / "good_out.root", layout)
    assert result.exit_code == 0, result.output
    reference = read_output(tmp_path / "good_out.root")
    table = []
    for name, override, damage in _cases(events, np.random.default_rng([SEED, len(layout)])):
        case_dir, path = _case_file(tmp_path / name, layout, events, good, override, damage, write_raw, schema_arrays)
        out = case_dir / "out"
        result = _run(path, out, layout)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert "Traceback" not in result.output, (name, result.output)
        if result.exit_code == 0:
            got = read_output(out / "in.flashsim-jet.root")
            same = all(ak.array_equal(got.flashjet[f], reference.flashjet[f]) for f in reference.flashjet.fields)
            assert same, f"{layout}/{name}: exit 0 with a different output (a silent change)"
            table.append((name, "identical"))
        else:
            errors = [line for line in lines if line.startswith("error: ")]
            assert result.exit_code == 1 and len(errors) == 1 and lines[-1] == errors[0], (name, result.output)
            assert len(lines) <= 2, (name, result.output)  # at most the "model on backend" line before it
            assert not out.exists() or not any(out.iterdir()), (name, sorted(out.iterdir()))
            table.append((name, "error"))
    print(f"{layout}: " + ", ".join(f"{n}={k}" for n, k in table))  # the damaged-input table (pytest -s)
    assert sum(kind == "error" for _, kind in table) >= 8, table  # the value and file-level damage is refused


def _read(path, layout):
    from hepzoo.datasets.layouts import layout_mapping

    return io.read_events(path, mapping=layout_mapping(layout), collections=["gen", "genjet"], check_values=True,
                          step_size=4)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_reader_damaged_inputs_fail_on_one_line_or_read_identically(layout, events, tmp_path, write_raw, schema_arrays):
    """The reader with the value policy (check_values=True) over the same seeded cases: one-line SchemaError/
    OSError/ValueError, or events identical to the undamaged file's; never another exception (a traceback)."""
    good = _write(layout, tmp_path / "good.root", events)
    reference = _read(good, layout)
    row = {"cases": 0, "one-line errors": 0, "identical": 0, "silent changes": 0, "tracebacks": 0, "leftovers": 0}
    for name, override, damage in _cases(events, np.random.default_rng([SEED, len(layout)])):
        case_dir, path = _case_file(tmp_path / name, layout, events, good, override, damage, write_raw, schema_arrays)
        row["cases"] += 1
        try:
            got = _read(path, layout)
        except (ValueError, OSError) as error:  # SchemaError is a ValueError
            one_line = len(str(error).splitlines()) == 1
            row["one-line errors" if one_line else "tracebacks"] += 1
            assert one_line, (layout, name, str(error))
        except Exception as error:  # noqa: BLE001 - anything else would reach the user as a traceback
            raise AssertionError(f"{layout}/{name}: {type(error).__name__}: {error}") from error
        else:
            same = all(ak.array_equal(got[p][f], reference[p][f]) for p in ("gen", "genjet") for f in reference[p].fields)
            row["identical" if same else "silent changes"] += 1
        row["leftovers"] += len([p for p in case_dir.iterdir() if p.name != "in.root"])
    print(f"reader/{layout}: {row}")  # the damaged-input table (pytest -s)
    assert row["silent changes"] == 0 and row["tracebacks"] == 0 and row["leftovers"] == 0, row
    assert row["one-line errors"] + row["identical"] == row["cases"] and row["one-line errors"] >= 8, row
