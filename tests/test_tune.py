"""hepzoo tune: the search-space format, the training loop's epoch hook, and a tiny ASHA + TPE search run through
the CLI, interrupted and resumed, whose best config is retrained."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from hepzoo.models import list_models
from hepzoo.training.config import load_config
from hepzoo.training.loop import build_model, train
from hepzoo.training.tune import Choice, RandInt, _check_space_against, _default_point, load_space


ROOT = Path(__file__).resolve().parents[1]
HEPZOO = str(Path(sys.executable).with_name("hepzoo"))


def _write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ---- search-space file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())  # every registered model has a config (and may have a space)
def test_example_configs_and_spaces_validate(name):
    base = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    cfg = load_config(raw=base)
    assert cfg.model.name == name
    build_model(cfg.model)  # the config's keyword arguments build the model
    space_file = ROOT / "configs" / "tune" / f"{name}.yaml"
    if space_file.is_file():  # a search space is optional
        space = load_space(space_file)
        _check_space_against(space, base, f"configs/{name}.yaml")  # every end value builds a valid config and model
        assert space.params and space.mode in ("min", "max")


def test_space_format_and_errors(tmp_path, make_raw_config):
    ok = {
        "metric": "jet_iqr_over_median",
        "max_epochs": 3,
        "params": {
            "optim.lr": {"loguniform": [1e-4, 1e-2]},
            "model.kwargs.width": {"choice": [8, 16]},
            "optim.warmup_steps": {"randint": [1, 3]},
            "loss.focal_gamma": {"uniform": [0.0, 3.0]},
        },
    }
    space = load_space(_write(tmp_path / "ok.yaml", ok))
    assert (space.metric, space.mode, space.grace_period, space.reduction_factor) == ("jet_iqr_over_median", "min", 1, 3)
    assert isinstance(space.params["optim.warmup_steps"], RandInt)
    assert isinstance(space.params["model.kwargs.width"], Choice)
    ray_space = space.ray_space()
    assert (ray_space["optim.warmup_steps"].lower, ray_space["optim.warmup_steps"].upper) == (1, 4)  # ends included
    assert (ray_space["optim.lr"].lower, ray_space["optim.lr"].upper) == (1e-4, 1e-2)
    assert ray_space["model.kwargs.width"].categories == [8, 16]
    assert space.contains("optim.warmup_steps", 3) and not space.contains("optim.warmup_steps", 4)
    assert space.contains("model.kwargs.width", 16) and not space.contains("model.kwargs.width", 16.0)

    raw = make_raw_config(tmp_path, model={"name": "mlpf-gnnlsh", "kwargs": {"width": 16, "num_layers": 1}})
    raw["loss"] = {"focal_gamma": 2.0}
    _check_space_against(space, raw, "base.yaml")
    cfg = load_config(raw=raw)
    assert _default_point(space, cfg, raw) == {
        "optim.lr": 1e-2, "model.kwargs.width": 16, "optim.warmup_steps": 2, "loss.focal_gamma": 2.0,
    }  # fmt: skip
    raw["optim"]["lr"] = 0.5  # outside the space: no default point
    assert _default_point(space, load_config(raw=raw), raw) is None

    bad = [
        ({"params": {"optim.lr": {"normal": [0, 1]}}}, "params.optim.lr"),
        ({"params": {"optim.lr": {"uniform": [1e-2, 1e-3]}}}, "optim.lr: the lower bound"),
        ({"params": {"optim.lr": {"loguniform": [0.0, 1e-3]}}}, "positive bounds"),
        ({"params": {"data.buckets": {"choice": [[64, 128], [128]]}}}, "params.data.buckets"),
        ({"params": {"optim.lr": {"uniform": [0, 1]}}, "mode": "best"}, "mode"),
        ({"params": {"optim.lr": {"uniform": [0, 1]}}, "grace_period": 5, "max_epochs": 2}, "grace_period 5"),
        ({"params": {}}, "params"),
        ({"params": {"loss.focal_gamma": {"uniform": [0, 3]}}}, "changes what val_loss measures"),
        ({"params": {"optim.lr": {"uniform": [0, 1]}}, "metrc": "val_loss"}, "metrc"),
    ]
    for i, (data, message) in enumerate(bad):
        path = _write(tmp_path / f"bad{i}.yaml", data)
        with pytest.raises(ValueError, match="invalid search space") as err:
            load_space(path)
        assert str(path) in str(err.value) and message in str(err.value), err.value
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_space(tmp_path / "missing.yaml")

    typo = load_space(_write(tmp_path / "typo.yaml", {"params": {"optim.lrr": {"uniform": [0.1, 1]}}}))
    with pytest.raises(ValueError, match=r"(?s)base.yaml with optim.lrr=0.1.*optim.lrr"):
        _check_space_against(typo, raw, "base.yaml")
    kwarg = load_space(_write(tmp_path / "kw.yaml", {"params": {"model.kwargs.widht": {"choice": [8]}}}))
    with pytest.raises(ValueError, match=r"(?s)base.yaml with model.kwargs.widht=8.*model.kwargs"):
        _check_space_against(kwarg, raw, "base.yaml")


# ---- the loop's epoch hook -----------------------------------------------------------------------------------


def test_on_epoch_end_hook(tmp_path, synthetic_events, write_events, make_raw_config):
    write_events(tmp_path / "train.root", synthetic_events(16, seed=1))
    write_events(tmp_path / "val.root", synthetic_events(8, seed=2, first_id=1000))
    cfg = load_config(raw=make_raw_config(tmp_path, optim={"epochs": 3}))
    calls = []
    result = train(cfg, on_epoch_end=lambda epoch, m: calls.append((epoch, m["step"], m["val"], Path(m["last"]))))
    vals = [json.loads(x)["val"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert [c[0] for c in calls] == [0, 1, 2]
    assert [c[2] for c in calls] == vals and calls[-1][1] == result["step"]
    assert all(c[3] == tmp_path / "run" / "last.pt" for c in calls)
    untouched = train(load_config(raw=make_raw_config(tmp_path, optim={"epochs": 3}, output_dir=str(tmp_path / "r2"))))
    assert untouched["val"] == result["val"]  # the hook changes nothing about the training


# ---- a tiny search -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory) -> Path:
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    d = tmp_path_factory.mktemp("tune_events")
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=60, seed=11, chunk_size=30), d / "train.root", progress=False)
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=30, seed=12, chunk_size=30), d / "val.root", progress=False)
    return d


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _val_epochs(trial_dir: Path) -> list[int]:
    recs = [json.loads(x) for x in (trial_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in recs if "val" in r]


@pytest.mark.slow
def test_tiny_search_asha_interrupt_resume_and_retrain(events_dir, tmp_path):
    max_epochs, lo, hi = 4, 1e-5, 3e-2
    base = _write(tmp_path / "base.yaml", {
        "model": {"name": "mlpf-gnnlsh", "kwargs": {"width": 16, "num_layers": 1, "num_hashes": 2}},
        "data": {"train": [str(events_dir / "train.root")], "val": [str(events_dir / "val.root")], "batch_size": 8,
                 "step_size": 30, "buckets": [256, 512, 1024], "num_workers": 0},
        "optim": {"lr": 1e-3, "epochs": 10, "warmup_steps": 2},
        "device": "cpu", "seed": 3, "output_dir": "unused", "progress": False,
    })  # fmt: skip
    space = _write(tmp_path / "space.yaml", {
        "metric": "val_loss", "mode": "min", "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 2,
        "physics_events": 30,
        "params": {"optim.lr": {"loguniform": [lo, hi]}, "model.kwargs.width": {"choice": [8, 16]}},
    })  # fmt: skip
    out = tmp_path / "out"
    home_results = Path.home() / "ray_results"
    had_home_results = home_results.exists()
    ray_temps = set(glob.glob(os.path.join(tempfile.gettempdir(), "hz-ray-*")))
    cmd = [HEPZOO, "tune", str(base), "--space", str(space), "--samples", "6", "--cpus", "2", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # 1. interrupt the search (SIGINT, like Ctrl+C) once a trial has reported its second epoch
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300  # a guard against a hung search, not a timing requirement
    while proc.poll() is None and not glob.glob(str(out / "search" / "*" / "checkpoint_000001")):
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=300)
    log.close()
    first_log = (tmp_path / "first.log").read_text()
    assert rc == 130, first_log[-3000:]
    assert "continue it with --resume" in first_log
    with pytest.raises(subprocess.CalledProcessError) as err:  # an existing experiment is never overwritten
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    assert "--resume" in err.value.stderr

    # 2. resume to the end and retrain the best config
    done = subprocess.run([*cmd, "--resume", "--retrain-best"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rows = _read_csv(out / "results.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"completed", "stopped"}
    loss = [float(r["val_loss"]) for r in rows]
    assert loss == sorted(loss)
    best = rows[0]
    epochs = {r["trial_id"]: int(r["epochs"]) for r in rows}
    assert epochs[best["trial_id"]] == max_epochs and best["status"] == "completed"
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert stopped, "ASHA stopped no trial"
    assert all(int(r["epochs"]) < max_epochs and float(r["val_loss"]) > float(best["val_loss"]) for r in stopped)
    for r in rows:
        assert r["seed"] == "3" and lo <= float(r["optim.lr"]) <= hi and r["model.kwargs.width"] in ("8", "16")
        assert math.isfinite(float(r["jet_iqr_over_median"])) and 0 < float(r["jet_matching_efficiency"]) <= 1
        assert float(r["best_val_loss"]) <= float(r["val_loss"])
        # each trial trained exactly its epochs in its own run folder, never restarting from epoch 0
        trial_epochs = _val_epochs(out / "trials" / r["trial_id"])
        assert trial_epochs[0] == 0 and trial_epochs.count(0) == 1 and trial_epochs[-1] == int(r["epochs"]) - 1
    restored = [p.parent.name for p in (out / "trials").glob("*/restored.pt")]
    assert restored, "no trial was resumed from its Ray checkpoint"
    assert (out / "results.md").read_text().count("\n") == 2 + len(rows)

    # the default config (lr 1e-3, width 16) was the first point the searcher evaluated
    assert any(float(r["optim.lr"]) == 1e-3 and r["model.kwargs.width"] == "16" for r in rows)

    # the best config is a complete training config; retraining it reproduces the best trial
    best_cfg = load_config(out / "best_config.yaml")
    assert best_cfg.optim.epochs == max_epochs and best_cfg.seed == 3
    assert best_cfg.optim.lr == pytest.approx(float(best["optim.lr"]), rel=1e-12)
    assert best_cfg.model.kwargs["width"] == int(best["model.kwargs.width"])
    assert best_cfg.output_dir == out / "best"
    recs = [json.loads(x) for x in (out / "best" / "metrics.jsonl").read_text().splitlines()]
    retrained = [r["val"]["total"] for r in recs if "val" in r]
    assert len(retrained) == max_epochs
    assert retrained[-1] == pytest.approx(float(best["val_loss"]), rel=1e-3)
    assert "jet_iqr_over_median" in done.stdout

    # Ray wrote nothing under the home folder; its session folder (a short temporary one here: the path of
    # out/ray_tmp is too long for unix sockets) was removed
    assert home_results.exists() == had_home_results
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "hz-ray-*"))) == ray_temps


def test_cli_help_and_errors(tmp_path, make_raw_config):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    runner = CliRunner()
    help_ = runner.invoke(app, ["tune", "--help"])
    assert help_.exit_code == 0 and "Example:" in help_.output
    base = _write(tmp_path / "base.yaml", make_raw_config(tmp_path))
    space = _write(tmp_path / "space.yaml", "params: {optim.lr: {uniform: [1.0, 0.1]}}\n")
    bad = runner.invoke(app, ["tune", str(base), "--space", str(space), "--samples", "2", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "space.yaml" in bad.output and "lower bound" in bad.output
    missing = runner.invoke(app, ["tune", str(tmp_path / "nope.yaml"), "--space", str(space)])
    assert missing.exit_code == 1 and "nope.yaml" in missing.output
    assert not (tmp_path / "o").exists()  # nothing started
