"""The runtime serves both model families on ONNX Runtime with torch impossible to import (a framework's
environment without torch): the same outputs as in a process where torch is there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

# run in a fresh interpreter where any import of torch fails
_SCRIPT = r"""
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")

sys.meta_path.insert(0, NoTorch())
from hepzoo.datasets import io
from hepzoo.runtime import Session

events = io.read_range(sys.argv[1], 0, 20)
out = {}
for name, version, kw in (("mlpf-gnnlsh", "3", {}), ("flashsim-jet", "1", {"seed": 5})):
    session = Session.load(name, version=version, backend="onnxruntime-cpu")
    objects = session.run(events, **kw)
    out[name] = [[float(x) for x in event[field]] for event in objects for field in sorted(objects.fields)][:400]
assert "torch" not in sys.modules
print(json.dumps(out))
"""


def _summary(events):
    from hepzoo.runtime import Session

    out = {}
    for name, version, kw in (("mlpf-gnnlsh", "3", {}), ("flashsim-jet", "1", {"seed": 5})):
        objects = Session.load(name, version=version, backend="onnxruntime-cpu").run(events, **kw)
        out[name] = [[float(x) for x in event[field]] for event in objects for field in sorted(objects.fields)][:400]
    return out


def test_both_families_run_without_torch(ci_sample):
    from hepzoo.datasets import io

    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(ci_sample)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    without = json.loads(done.stdout.strip().splitlines()[-1])
    with_torch = _summary(io.read_range(ci_sample, 0, 20))
    assert set(without) == {"mlpf-gnnlsh", "flashsim-jet"}
    for name, rows in with_torch.items():
        assert len(rows) == len(without[name]) and sum(len(r) for r in rows) > 0, name
        for a, b in zip(rows, without[name], strict=True):
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=name)


def test_a_named_cpu_backend_does_not_import_torch_where_it_is_installed(ci_sample):
    """Loading with an explicit ONNX Runtime backend probes only that backend (probing the GPU backends would
    import torch, seconds of start-up for a job that never uses it)."""
    script = (
        "import sys; from hepzoo.datasets import io; from hepzoo.runtime import Session; "
        "s = Session.load('mlpf-gnnlsh', version='3', backend='onnxruntime-cpu'); "
        f"s.run(io.read_range({str(ci_sample)!r}, 0, 3)); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


# ---- the CLI without torch (and without the generate/validate extras where a command does not need them) -----

# run a hepzoo command in a fresh interpreter where importing any of the modules named in argv[1] fails
_CLI_SCRIPT = r"""
import importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))
tried = []

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Missing())
from hepzoo.cli import app

try:
    app(sys.argv[2:], prog_name="hepzoo")
    code = 0
except SystemExit as done:
    code = done.code or 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"code": code, "loaded": loaded, "tried": sorted({t.split(".")[0] for t in tried})}))
"""

NO_TORCH = ("torch",)
# what the core install (pip install hepzoo, no extras) lacks: the train, generate, validate, dask and tune extras
CORE_MISSING = ("torch", "onnxscript", "pythia8", "pyhepmc", "fastjet", "matplotlib", "mplhep", "hist", "dask",
                "distributed", "ray", "optuna")  # fmt: skip


def _hepzoo_without(blocked, *args, env=None):
    import os

    done = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT, ",".join(blocked), *map(str, args)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    status = json.loads(done.stdout.strip().splitlines()[-1])
    return status, done.stdout, done.stderr


@pytest.mark.parametrize("args", [["--help"], ["zoo", "list"], ["run", "--help"], ["validate", "--help"],
                                  ["generate", "--help"], ["train", "--help"]], ids=" ".join)  # fmt: skip
def test_help_and_zoo_list_need_no_extras(args):
    status, out, err = _hepzoo_without(CORE_MISSING, *args)
    assert status == {"code": 0, "loaded": [], "tried": []}, err[-3000:]
    if args == ["zoo", "list"]:
        rows = [line.split() for line in out.splitlines()[:-1]]
        assert ["mlpf-gnnlsh", "3", "mlpf-gnnlsh"] in [row[:3] for row in rows]
        assert all(len(row) == 4 for row in rows)  # name, version, model, zoo folder


def test_zoo_show_needs_no_extras():
    """Without torch the summary leaves out only the parameter count (counting reads weights.pt with torch)."""
    status, out, err = _hepzoo_without(CORE_MISSING, "zoo", "show", "mlpf-gnnlsh", "--version", "3")
    assert status["code"] == 0 and status["loaded"] == [], err[-3000:]
    assert "mlpf-gnnlsh 3" in out and "weights: weights.pt, " in out and "parameters" not in out
    status, out, err = _hepzoo_without((), "zoo", "show", "mlpf-gnnlsh", "--version", "3")
    assert status["code"] == 0 and re.search(r"weights: weights\.pt, \d+ parameters, ", out), out


def test_hepzoo_run_of_an_mlpf_release_needs_no_extras(ci_sample, tmp_path):
    """``hepzoo run`` with the default backend choice: no torch (not even to ask for a GPU) and no extra."""
    out = tmp_path / "out.root"
    status, stdout, err = _hepzoo_without(CORE_MISSING, "run", "mlpf-gnnlsh", "--version", "3", "-i", ci_sample,
                                          "-o", out, "--no-progress")  # fmt: skip
    gpu = any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))  # auto may ask torch then
    assert status["code"] == 0 and status["loaded"] == [], err[-3000:]
    assert status["tried"] == [] or (gpu and status["tried"] == ["torch"]), status
    assert "on backend onnxruntime-cpu" in stdout
    from hepzoo.datasets import io
    from hepzoo.runtime import Session

    import uproot

    with uproot.open(out) as handle:
        written = handle["events"].arrays(["mlpf_pt"])["mlpf_pt"]
    expected = Session.load("mlpf-gnnlsh", version="3", backend="onnxruntime-cpu").run(io.read_range(ci_sample, 0, 200))
    assert len(written) == len(expected) == 200
    np.testing.assert_array_equal(np.concatenate(written.to_list()), np.concatenate(expected.pt.to_list()))


def test_hepzoo_validate_of_an_mlpf_release_runs_without_torch(ci_sample, tmp_path):
    out = tmp_path / "validate"
    status, stdout, err = _hepzoo_without(NO_TORCH, "validate", "mlpf-gnnlsh", "--data", ci_sample, "--out", out,
                                          "--max-events", 60, "--no-gate", "--backend", "onnxruntime-cpu")  # fmt: skip
    assert status["loaded"] == status["tried"] == [], err[-3000:]
    assert status["code"] in (0, 1) and "report:" in stdout, err[-3000:]  # 1: a gate check failed on 60 events
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["n_events"] == 60 and metrics["model"]["backend"] == "onnxruntime-cpu"
    assert metrics["mlpf"]["mlpf"]["jets"]["n_gen"] > 0


def test_a_command_missing_its_extra_says_which_in_one_line():
    status, stdout, err = _hepzoo_without(("fastjet", "pythia8"), "generate", "ttbar", "-n", 1, "-o", "/nonexistent/x.root")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status["code"] == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "pip install 'hepzoo[generate" in lines[0]
