"""Training: losses (hand-computed values), config + overrides, schedule, checkpoints, the loop, exact resume."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import yaml

from hepzoo.datasets import schema
from hepzoo.datasets.loader import MLPFDataset
from hepzoo.training import checkpoint as ckpt
from hepzoo.training.cli import train_command
from hepzoo.training.config import load_config
from hepzoo.training.losses import COMPONENTS, focal_loss, loss_counts, mlpf_loss
from hepzoo.training.loop import WarmupCosine, train

EF = schema.ElementFeature
TC = schema.TargetClass
N_CLS = len(TC)


# ---- a training dataset (conftest's synthetic_events) ------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path, synthetic_events, write_events):
    write_events(tmp_path / "train.root", synthetic_events(24, seed=1))
    write_events(tmp_path / "val.root", synthetic_events(8, seed=2, first_id=1000))
    return tmp_path


# ---- losses ---------------------------------------------------------------------------------------------------


def test_focal_loss_hand_values():
    logits = torch.zeros(2, 2)  # p = 0.5 for both classes
    target = torch.tensor([0, 1])
    ln2 = math.log(2.0)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), torch.full((2,), ln2))
    torch.testing.assert_close(focal_loss(logits, target, gamma=2.0), torch.full((2,), 0.25 * ln2))
    w = torch.tensor([3.0, 1.0])
    torch.testing.assert_close(focal_loss(logits, target, 2.0, w), torch.tensor([0.75 * ln2, 0.25 * ln2]))
    # confident and right: p_t = 3/4 -> (1/4)^2 * ln(4/3)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    torch.testing.assert_close(focal_loss(logits, torch.tensor([0]), 2.0), torch.tensor([math.log(4 / 3) / 16]))


def _hand_batch():
    """B=1, N=3: a charged hadron (+1), a NONE slot, and a padded slot full of NaN (must be ignored)."""
    nan = float("nan")
    cls_logits = torch.zeros(1, 3, N_CLS)
    cls_logits[0, 2] = nan
    charge_logits = torch.zeros(1, 3, 3)
    charge_logits[0, 2] = nan
    regression = torch.tensor([[[2.0 * 1.5, 0.5, 0.0, 1.0, 3.0], [nan, nan, nan, nan, nan], [nan] * 5]])
    target_cls = torch.tensor([[int(TC.CHARGED_HADRON), int(TC.NONE), int(TC.NONE)]])
    target_reg = torch.tensor([[[1.0, 1.5, 0.0, 0.0, -1.0, 3.0], [0.0] * 6, [0.0] * 6]])
    mask = torch.tensor([[True, True, False]])
    return cls_logits, charge_logits, regression, target_cls, target_reg, mask


def test_mlpf_loss_hand_values():
    cls_logits, charge_logits, regression, target_cls, target_reg, mask = (
        t.requires_grad_(t.is_floating_point()) if t.is_floating_point() else t for t in _hand_batch()
    )
    out = mlpf_loss(cls_logits, charge_logits, regression, target_cls, target_reg, mask, gamma=2.0)
    assert set(out) == set(COMPONENTS)
    exp_cls = (5 / 6) ** 2 * math.log(6.0)  # uniform logits, p_t = 1/6, mean over the 2 real elements
    exp = {
        "cls": exp_cls,
        "charge": math.log(3.0),  # one charged element, uniform over (-1, 0, +1)
        "pt": 0.5 * math.log(2.0) ** 2,  # log(3.0) - log(1.5) = ln 2 < delta: quadratic
        "eta": 0.5 * 0.5**2,
        "sin_phi": 0.0,
        "cos_phi": 2.0 - 0.5,  # |d| = 2 > delta = 1: linear branch
        "e": 0.0,
    }
    exp["reg"] = exp["pt"] + exp["eta"] + exp["sin_phi"] + exp["cos_phi"] + exp["e"]
    exp["total"] = exp["cls"] + exp["charge"] + exp["reg"]
    for k, v in exp.items():
        assert out[k].item() == pytest.approx(v, rel=1e-6, abs=1e-7), k
    out["total"].backward()
    for t in (cls_logits, charge_logits, regression):
        assert torch.isfinite(t.grad).all()
        assert torch.all(t.grad[0, 2] == 0)  # padding gets no gradient
    assert torch.all(regression.grad[0, 1] == 0)  # NONE target: no regression gradient

    # weights, class weights, huber delta and explicit denominators
    b = _hand_batch()
    out = mlpf_loss(*b, gamma=0.0, class_weights=[1, 2, 1, 1, 1, 1], huber_delta=0.5, weights=(2.0, 0.5, 0.1),
                    norm=torch.tensor([4.0, 2.0, 1.0]))  # fmt: skip
    ce = math.log(6.0)
    assert out["cls"].item() == pytest.approx((2 * ce + ce) / 4)  # class 1 weighted x2, class 0 x1
    assert out["charge"].item() == pytest.approx(math.log(3.0) / 2)
    assert out["pt"].item() == pytest.approx(0.5 * (math.log(2.0) - 0.25))  # ln 2 > 0.5: linear
    assert out["eta"].item() == pytest.approx(0.5 * 0.5**2)  # |d| = 0.5 = delta: quadratic
    assert out["cos_phi"].item() == pytest.approx(0.5 * (2.0 - 0.25))
    reg = out["pt"] + out["eta"] + out["sin_phi"] + out["cos_phi"] + out["e"]
    assert out["total"].item() == pytest.approx(2 * out["cls"].item() + 0.5 * out["charge"].item() + 0.1 * reg.item())


def test_loss_counts_and_empty_selections():
    target_cls = torch.tensor([[1, 0, 2, 4], [5, 3, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    assert loss_counts(target_cls, mask).tolist() == [6.0, 2.0, 4.0, 0.0]  # the ELECTRON slot is padding; no jets
    # no charged, no particle target: those components are exactly 0 and still differentiable
    logits = torch.zeros(1, 2, N_CLS, requires_grad=True)
    out = mlpf_loss(logits, torch.zeros(1, 2, 3), torch.ones(1, 2, 5), torch.zeros(1, 2, dtype=torch.int64),
                    torch.zeros(1, 2, 6), torch.ones(1, 2, dtype=torch.bool))  # fmt: skip
    assert out["charge"].item() == 0.0 and out["reg"].item() == 0.0
    out["total"].backward()
    assert torch.isfinite(logits.grad).all()


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_yaml_overrides_and_errors(tmp_path, make_raw_config):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(make_raw_config(tmp_path)))
    cfg = load_config(p, ["optim.lr=3e-4", "data.batch_size=7", "data.buckets=[16, 32]", "model.kwargs.width=8",
                          "optim.grad_clip=null", "precision=bf16"])  # fmt: skip
    assert cfg.optim.lr == 3e-4 and cfg.data.batch_size == 7 and cfg.data.buckets == [16, 32]
    assert cfg.model.kwargs == {"width": 8} and cfg.optim.grad_clip is None and cfg.precision == "bf16"
    assert cfg.optim.epochs == 2 and cfg.loss.focal_gamma == 2.0  # file values and defaults kept
    with pytest.raises(ValueError, match=r"data\.batch_size: Input should be a valid integer"):
        load_config(p, ["data.batch_size=many"])
    with pytest.raises(ValueError, match=r"optim\.lr: Input should be greater than 0"):
        load_config(p, ["optim.lr=0"])
    with pytest.raises(ValueError, match=r"optim\.lrr: Extra inputs are not permitted"):
        load_config(p, ["optim.lrr=1"])
    with pytest.raises(ValueError, match=r"optimizer: Extra inputs are not permitted"):
        load_config(p, ["optimizer.lr=1"])
    with pytest.raises(ValueError, match=r"seed\.x: seed is not a section"):
        load_config(p, ["seed.x=1"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(p, ["optim.lr"])
    with pytest.raises(ValueError, match=r"loss\.class_weights: Value error, needs 6 weights"):
        load_config(p, ["loss.class_weights=[1, 2]"])
    with pytest.raises(ValueError, match=r"precision: Input should be 'fp32', 'bf16', 'fp16' or 'auto'"):
        load_config(p, ["precision=fp8"])
    bad = make_raw_config(tmp_path)
    bad["data"]["shufle"] = True
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"c\.yaml: invalid training config:\n  data\.shufle: Extra inputs"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    # a key given twice (e.g. a second "model:" section pasted below the first) is refused, not silently replaced
    text = yaml.safe_dump(make_raw_config(tmp_path))
    p.write_text(text + "model:\n  name: mlpf-transformer\n")
    with pytest.raises(ValueError, match=r"c\.yaml: not valid YAML: .*key 'model' given twice \(lines 1?\d+ and \d+\)"):
        load_config(p)
    p.write_text("optim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(ValueError, match=r"key 'lr' given twice \(lines 2 and 3\)"):
        load_config(p)


@pytest.mark.parametrize("name", ["mlpf-gnnlsh", "mlpf-transformer"])
def test_example_configs_validate(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    assert cfg.model.name == name and cfg.data.train and cfg.data.val


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


# ---- checkpoints ----------------------------------------------------------------------------------------------


def test_checkpoint_weights_only_atomic_and_rng(tmp_path, tiny_mlpf):
    model = tiny_mlpf()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 4, len(EF)), torch.ones(1, 4, dtype=torch.bool))[0].sum().backward()
    opt.step()
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    rng = ckpt.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    path = ckpt.save_checkpoint(tmp_path / "sub" / "c.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                            "rng": [rng], "step": 5, "config": {"a": [1, "b"]}})  # fmt: skip
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 5 and raw["config"] == {"a": [1, "b"]} and raw["format"] == ckpt.FORMAT_VERSION
    state = ckpt.load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    ckpt.restore_rng_state(state["rng"][0])
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a loadable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


# ---- the loop -------------------------------------------------------------------------------------------------


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_end_to_end(dataset, make_raw_config):
    raw = make_raw_config(dataset, optim={"epochs": 3})
    cfg = load_config(raw=raw)
    untrained_raw = make_raw_config(dataset, optim={"lr": 1e-12, "epochs": 1}, output_dir=str(dataset / "untrained"))
    untrained = train(load_config(raw=untrained_raw))["val"]
    result = train(cfg)
    out = dataset / "run"
    recs = _records(out / "metrics.jsonl")
    steps = [r for r in recs if "loss" in r]
    vals = [r for r in recs if "val" in r]
    # 24 events in 3 units of 8, buckets (8, 16), batch 4: the schedule length is the counted batch number
    n_batches = sum(1 for _ in MLPFDataset(cfg.data.train, step_size=8, batch_size=4, buckets=(8, 16)))
    assert result["total_steps"] == 3 * n_batches
    assert result["step"] == result["total_steps"] == len(steps) and len(vals) == 3
    assert [r["step"] for r in steps] == list(range(1, result["step"] + 1))
    assert set(steps[0]["loss"]) == set(COMPONENTS) and set(vals[0]["val"]) == set(COMPONENTS)
    assert steps[0]["lr"] == pytest.approx(1e-2 / 2)  # warm-up step 1 of 2
    assert steps[-1]["lr"] < 1e-3  # cosine decayed
    assert all(math.isfinite(r["loss"]["total"]) for r in steps)
    assert result["val"]["total"] < 0.9 * untrained["total"]  # it learns something
    best = ckpt.load_checkpoint(out / "best.pt")
    last = ckpt.load_checkpoint(out / "last.pt")
    assert best["best_val"] == pytest.approx(min(v["val"]["total"] for v in vals))
    assert last["epoch"] == 3 and last["batch_in_epoch"] == 0 and last["step"] == result["step"]
    assert last["config"]["optim"]["epochs"] == 3 and len(last["rng"]) == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3


def test_resume_is_exact(dataset, make_raw_config):
    """N steps uninterrupted == K steps, stop, resume, N - K steps (mid-epoch stop, dropout, shuffling)."""
    n_total, k = 11, 4  # 6 batches per epoch here: K is mid-epoch 0, N is inside epoch 1 (crosses a validation)
    common = {"model": {"name": "tiny_models:tiny_mlpf", "kwargs": {"width": 16, "dropout": 0.2}},
              "optim": {"epochs": 3, "max_steps": n_total}, "checkpoint_every_steps": 3,
              "snapshot_every_steps": 5}  # fmt: skip
    a = train(load_config(raw=make_raw_config(dataset, output_dir=str(dataset / "a"), **common)))
    assert a["step"] == n_total
    b_cfg = make_raw_config(dataset, output_dir=str(dataset / "b"), **common)
    b_cfg["optim"]["max_steps"] = k
    b1 = train(load_config(raw=b_cfg))
    assert b1["step"] == k and ckpt.load_checkpoint(dataset / "b" / "last.pt")["batch_in_epoch"] == k
    b_cfg["optim"]["max_steps"] = n_total
    b_cfg["resume"] = "auto"
    b = train(load_config(raw=b_cfg))
    assert b["step"] == n_total
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    for name in sa:
        torch.testing.assert_close(sb[name], sa[name], rtol=0, atol=1e-6, msg=name)
    ca, cb = ckpt.load_checkpoint(dataset / "a" / "last.pt"), ckpt.load_checkpoint(dataset / "b" / "last.pt")
    assert ca["step"] == cb["step"] and ca["epoch"] == cb["epoch"] and ca["best_val"] == cb["best_val"]
    for pid, st in ca["optimizer"]["state"].items():
        torch.testing.assert_close(cb["optimizer"]["state"][pid]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=1e-9)
    la = [r for r in _records(dataset / "a" / "metrics.jsonl")]
    lb = [r for r in _records(dataset / "b" / "metrics.jsonl")]
    strip = [{k: v for k, v in r.items() if k != "time"} for r in la]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in lb]  # same losses, lr, val, in order
    # events seen: the sum of the batches' events, carried across the resume; snapshots at steps 5 and 10
    n_events = sum(len(bt["event_id"]) for bt in MLPFDataset([str(dataset / "train.root")], step_size=8, batch_size=4, buckets=(8, 16)))
    steps = [r for r in la if "loss" in r]
    assert all(b["events"] > a["events"] for a, b in zip(steps, steps[1:]))
    assert [r for r in steps if r["epoch"] == 0][-1]["events"] == n_events  # epoch 0: every training event once
    snaps = [r for r in la if "snapshot" in r]
    assert [r["step"] for r in snaps] == [5, 10] and all(set(r["val"]) == set(COMPONENTS) for r in snaps)
    for r in snaps:
        state = ckpt.load_checkpoint(dataset / "a" / r["snapshot"])
        assert state["step"] == r["step"] and state["events_seen"] == r["events"] and "optimizer" not in state
    assert cb["events_seen"] == ca["events_seen"] == steps[-1]["events"]


def test_train_command_and_registry_name_error(dataset, capsys, make_raw_config):
    p = dataset / "c.yaml"
    p.write_text(yaml.safe_dump(make_raw_config(dataset)))
    train_command(p, ["optim.epochs=1", f"output_dir={dataset / 'cli'}"])
    assert "trained" in capsys.readouterr().out and (dataset / "cli" / "last.pt").is_file()
    with pytest.raises(ValueError, match="model.name 'no_such_module:f': cannot import"):
        train_command(p, ["model.name=no_such_module:f"])
    if pytest.importorskip("hepzoo.models").list_models():
        with pytest.raises(ValueError, match="model.name: unknown model 'no-such-model'"):
            train_command(p, ["model.name=no-such-model"])
        with pytest.raises(ValueError, match="model.kwargs: "):
            train_command(p, ["model.name=mlpf-transformer", "model.kwargs.no_such_kwarg=1"])


def test_precision_on_cpu(dataset, make_raw_config):
    raw = make_raw_config(dataset, precision="bf16", optim={"epochs": 1, "max_steps": 3})
    result = train(load_config(raw=raw))  # bf16 autocast on CPU; weights stay float32
    assert result["step"] == 3 and all(p.dtype == torch.float32 for p in result["model"].parameters())
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        train(load_config(raw=make_raw_config(dataset, precision="fp16")))


@pytest.mark.parametrize("name", ["mlpf-gnnlsh", "mlpf-transformer"])
def test_registry_models_train_one_epoch(dataset, name, make_raw_config):
    """The real zoo models plug into the loop (interface: outputs, shapes, physical regression)."""
    models = pytest.importorskip("hepzoo.models")
    if name not in models.list_models():
        pytest.skip(f"{name} not registered yet")
    kwargs = {"width": 16, "num_layers": 1}
    if name == "mlpf-gnnlsh":
        kwargs["bin_size"] = 8
    raw = make_raw_config(dataset, model={"name": name, "kwargs": kwargs}, optim={"epochs": 1})
    result = train(load_config(raw=raw))
    assert result["step"] > 0 and math.isfinite(result["val"]["total"])


def test_init_weights_fine_tunes_from_checkpoint_or_state_dict(dataset, make_raw_config):
    first = train(load_config(raw=make_raw_config(dataset, optim={"epochs": 1}, output_dir=str(dataset / "a"))))
    trained = ckpt.load_model_weights(dataset / "a" / "last.pt")
    torch.save(trained, dataset / "weights.pt")
    for source in (dataset / "a" / "last.pt", dataset / "weights.pt"):
        raw = make_raw_config(dataset, optim={"lr": 1e-12, "epochs": 1}, output_dir=str(dataset / "b"))
        raw["model"]["init_weights"] = str(source)
        second = train(load_config(raw=raw))
        # with a vanishing learning rate the fine-tuned model keeps the weights it started from
        assert second["val"]["total"] == pytest.approx(first["val"]["total"], rel=1e-4)
    raw["model"]["init_weights"] = str(dataset / "missing.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train(load_config(raw=raw))
