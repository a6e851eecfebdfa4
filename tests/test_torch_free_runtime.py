"""The runtime serves both model families on ONNX Runtime with torch impossible to import (a framework's
environment without torch): the same outputs as in a process where torch is there."""

from __future__ import annotations

import json
import subprocess
import sys

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
