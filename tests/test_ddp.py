"""DDP: ``torchrun --nproc_per_node=2`` (gloo, CPU) x batch 2 trains the same weights as 1 process x batch 4.

Equal global batches by construction: one file of 16 events, all in one size bucket, no shuffling. One process
reads work units of 4 events (= one batch of 4); two ranks read units of 2 events (= one batch of 2) and the
loader deals units round-robin, so global step k holds events 4k..4k+3 in both runs. Events have different
numbers of elements per rank, which the loop's global loss denominators make irrelevant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hepzoo.training import checkpoint as ckpt
from hepzoo.training.config import load_config
from hepzoo.training.loop import train


TESTS = Path(__file__).parent


def _config(make_raw_config, tmp_path: Path, name: str, step_size: int, batch_size: int) -> dict:
    raw = make_raw_config(tmp_path, output_dir=str(tmp_path / name))
    raw["data"].update(step_size=step_size, batch_size=batch_size, buckets=[16], shuffle=False)
    raw["optim"].update(epochs=2, lr=5e-3, warmup_steps=2)
    return raw


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_two_ranks_match_single_process(tmp_path, synthetic_events, write_events, make_raw_config):
    write_events(tmp_path / "train.root", synthetic_events(16, seed=4, max_elements=10))
    write_events(tmp_path / "val.root", synthetic_events(6, seed=5, max_elements=10, first_id=1000))

    single = train(load_config(raw=_config(make_raw_config, tmp_path, "single", step_size=4, batch_size=4)))

    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(make_raw_config, tmp_path, "ddp", step_size=2, batch_size=2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hepzoo.training.cli", str(cfg_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained 8 steps") == 1  # rank 0 reports, rank 1 stays quiet

    d = ckpt.load_checkpoint(tmp_path / "ddp" / "last.pt")
    s = ckpt.load_checkpoint(tmp_path / "single" / "last.pt")
    assert single["step"] == d["step"] == 8 and d["total_steps"] == s["total_steps"] == 8
    assert len(d["rng"]) == 2  # every rank's RNG state is kept for resume
    for name, w in s["model"].items():
        torch.testing.assert_close(d["model"][name], w, rtol=0, atol=1e-6, msg=name)  # seen: 1.5e-8

    rs, rd = _records(tmp_path / "single" / "metrics.jsonl"), _records(tmp_path / "ddp" / "metrics.jsonl")
    assert len(rd) == len(rs) == 8 + 2  # rank 0 only: one line per step and per epoch
    for a, b in zip(rs, rd):
        assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
        key = "loss" if "loss" in a else "val"
        for comp, v in a[key].items():
            assert b[key][comp] == pytest.approx(v, rel=1e-4, abs=1e-5), (a["step"], key, comp)
