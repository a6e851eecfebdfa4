"""Flash-sim training through the shared loop: family -> task, normalisation, loss, end-to-end, exact resume.

Data: small schema-conforming ROOT files (gen, trk, genjet, recojet) written to tmp_path, read by the real
``FlashSimDataset``. Models: a tiny stand-in with the flash-sim interface (conditional Gaussian + efficiency
logit, with dropout and a ``dequantize`` helper so resume must restore RNG streams) and, where importable,
the real ``flashsim-jet`` / ``flashsim-track`` flows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from hepzoo.datasets import schema
from hepzoo.training import checkpoint as ckpt
from hepzoo.training import distributed as D
from hepzoo.training.config import load_config
from hepzoo.training.loop import train
from hepzoo.training.tasks import FlashSimTask, normalization_stats, resolve_family


fd = pytest.importorskip("hepzoo.datasets.flashsim_data")
from hepzoo.datasets.flashsim_loader import FlashSimDataset, table_batches  # noqa: E402
N_CTX = {"jet": len(fd.JetContext), "track": len(fd.TrackContext)}
N_TGT = {"jet": len(fd.JetTarget), "track": len(fd.TrackTarget)}
REPO = Path(__file__).parents[1]


# ---- stand-in model -----------------------------------------------------------------------------------------


class TinyFlashSim(nn.Module):
    """Flash-sim interface: conditional diagonal Gaussian in normalised target space + efficiency MLP."""

    def __init__(self, n_context: int, n_target: int, width: int = 16, dropout: float = 0.0, discrete=(4,)):
        super().__init__()
        self.register_buffer("context_mean", torch.zeros(n_context))
        self.register_buffer("context_std", torch.ones(n_context))
        self.register_buffer("target_mean", torch.zeros(n_target))
        self.register_buffer("target_std", torch.ones(n_target))
        disc = torch.zeros(n_target, dtype=torch.bool)
        disc[[i for i in discrete if i < n_target]] = True
        self.register_buffer("is_discrete", disc, persistent=False)
        self.body = nn.Sequential(nn.Linear(n_context, width), nn.Tanh(), nn.Dropout(dropout))
        self.gauss = nn.Linear(width, 2 * n_target)
        self.eff = nn.Linear(width, 1)

    def set_normalization(self, context_mean, context_std, target_mean, target_std) -> None:
        for name, v in zip(("context_mean", "context_std", "target_mean", "target_std"),
                           (context_mean, context_std, target_mean, target_std)):  # fmt: skip
            getattr(self, name).copy_(torch.as_tensor(v, dtype=torch.float32))

    def _h(self, context):
        return self.body((context - self.context_mean) / self.context_std)

    def efficiency_logit(self, context):
        return self.eff(self._h(context)).squeeze(-1)

    def log_prob(self, target, context):
        mu, log_s = self.gauss(self._h(context)).chunk(2, -1)
        log_s = log_s.clamp(-5, 5)
        z = ((target - self.target_mean) / self.target_std - mu) * torch.exp(-log_s)
        logp = -0.5 * z * z - log_s - 0.5 * math.log(2 * math.pi)
        return logp.sum(-1) - torch.log(self.target_std).sum()

    def dequantize(self, target):
        u = torch.rand_like(target) - 0.5
        return target + torch.where(self.is_discrete, u, torch.zeros_like(u))

    def forward(self, context, noise):
        mu, log_s = self.gauss(self._h(context)).chunk(2, -1)
        x = (mu + noise * torch.exp(log_s.clamp(-5, 5))) * self.target_std + self.target_mean
        return torch.sigmoid(self.efficiency_logit(context)), torch.where(self.is_discrete, x.round(), x)


def tiny_flashsim(kind: str = "jet", **kw) -> TinyFlashSim:
    """Factory for ``model.name: 'test_training_flashsim:tiny_flashsim'`` (with ``model.family: flashsim``)."""
    return TinyFlashSim(N_CTX[kind], N_TGT[kind], **kw)


class TableDataset(torch.utils.data.IterableDataset):
    """Stand-in dataset for the ``data.dataset`` hook: a fixed in-memory table (paths are ignored)."""

    def __init__(self, paths, kind="jet", *, step_size=1, batch_size=4, shuffle=False, seed=0):
        super().__init__()
        g = np.random.default_rng(7)
        n = 10
        self.context = np.stack([np.arange(n, dtype=np.float32), np.full(n, 3.0, np.float32)], 1)
        self.matched = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 1], bool)
        self.target = np.where(self.matched[:, None], g.normal(size=(n, 2)), 0.0).astype(np.float32)
        self.batch_size = batch_size

    def __iter__(self):
        table = {"context": self.context, "matched": self.matched, "target": self.target}
        yield from table_batches(table, self.batch_size)


# ---- synthetic events ---------------------------------------------------------------------------------------


def _zeros(prefix: str, k: int) -> dict:
    return {schema.COLLECTIONS[prefix].branch(f.name): np.zeros(k, f.dtype) for f in schema.COLLECTIONS[prefix].fields}


def flashsim_events(n: int, seed: int = 0, first_id: int = 0) -> list[dict]:
    """Events with generator jets, reco jets (efficiency rising with pT, response and mass smeared around the
    generator values), generator particles in the jet cones and tracks for most charged ones."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ev = {"event_id": first_id + i, "process": 1, "n_pileup": int(rng.integers(0, 5)), "weight": 1.0, "seed": seed}
        nj = int(rng.integers(1, 5))
        pt = 15.0 + rng.exponential(30.0, nj)
        eta, phi = rng.uniform(-2.3, 2.3, nj), rng.uniform(-np.pi, np.pi, nj)
        m, nc = 0.1 * pt * rng.uniform(0.5, 1.5, nj), rng.poisson(10, nj) + 1
        ev.update(_zeros("genjet", nj))
        ev.update(genjet_pt=pt, genjet_eta=eta, genjet_phi=phi, genjet_m=m, genjet_n_const=nc)
        matched = rng.random(nj) < 1.0 / (1.0 + np.exp(-(pt - 30.0) / 8.0))
        k = int(matched.sum())
        ev.update(_zeros("recojet", k))
        ev.update(
            recojet_pt=pt[matched] * rng.normal(0.95, 0.08, k), recojet_eta=eta[matched] + rng.normal(0, 0.02, k),
            recojet_phi=phi[matched] + rng.normal(0, 0.02, k), recojet_m=m[matched] * rng.normal(1.0, 0.05, k),
            recojet_n_const=nc[matched] + rng.poisson(1, k),
        )  # fmt: skip
        # three generator particles per jet, inside its cone; charged ones mostly get a track
        ng = 3 * nj
        ev.update(_zeros("gen", ng))
        ev.update(
            gen_pid=rng.choice([211, -211, 22, 11], ng), gen_pt=np.repeat(pt / 4, 3) * rng.uniform(0.5, 1.5, ng),
            gen_eta=np.repeat(eta, 3) + rng.normal(0, 0.05, ng), gen_phi=np.repeat(phi, 3) + rng.normal(0, 0.05, ng),
            gen_vz=rng.normal(0, 20, ng), gen_elem_idx=np.full(ng, -1),
        )  # fmt: skip
        ev["gen_charge"] = np.where(ev["gen_pid"] == 22, 0, np.where(ev["gen_pid"] > 0, 1, -1))
        ev["gen_charge"] = np.where(ev["gen_pid"] == 11, -1, ev["gen_charge"])
        ev["gen_e"] = ev["gen_pt"] * np.cosh(ev["gen_eta"])
        has_trk = (ev["gen_charge"] != 0) & (rng.random(ng) < 0.9)
        idx = np.flatnonzero(has_trk)
        ev.update(_zeros("trk", idx.size))
        ev.update(
            trk_pt=ev["gen_pt"][idx] * rng.normal(1.0, 0.02, idx.size), trk_eta=ev["gen_eta"][idx],
            trk_phi=ev["gen_phi"][idx], trk_charge=ev["gen_charge"][idx], trk_gen_idx=idx,
            trk_d0=rng.normal(0, 0.05, idx.size), trk_z0=ev["gen_vz"][idx] + rng.normal(0, 0.1, idx.size),
        )  # fmt: skip
        for b, v in list(ev.items()):  # schema dtypes
            for c in schema.COLLECTIONS.values():
                if b in c.branches:
                    ev[b] = np.asarray(v).astype(c.branches[b])
        out.append(ev)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_events):
    d = tmp_path_factory.mktemp("flashsim")
    write_events(d / "train.root", flashsim_events(96, seed=1))
    write_events(d / "val.root", flashsim_events(32, seed=2, first_id=1000))
    return d


def make_raw(d: Path, out: str, kind: str = "jet", **sections) -> dict:
    raw = {
        "model": {"name": "test_training_flashsim:tiny_flashsim", "family": "flashsim", "kwargs": {"kind": kind}},
        "data": {"train": [str(d / "train.root")], "val": [str(d / "val.root")], "kind": kind,
                 "step_size": 16, "batch_size": 32, "shuffle": True},  # fmt: skip
        "optim": {"lr": 1e-2, "epochs": 3, "warmup_steps": 2},
        "seed": 5,
        "device": "cpu",
        "output_dir": str(d / out),
        "log_every_steps": 1,
        "progress": False,
    }
    for k, v in sections.items():
        raw[k] = {**raw[k], **v} if isinstance(raw.get(k), dict) else v
    return raw


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- config and task resolution -------------------------------------------------------------------------------


def test_config_family_and_kind(tmp_path):
    raw = make_raw(tmp_path, "r")
    cfg = load_config(raw=raw)
    assert cfg.data.kind == "jet" and cfg.model.family == "flashsim" and resolve_family(cfg.model) == "flashsim"
    del raw["data"]["kind"]
    with pytest.raises(ValueError, match="data.kind is required for flash-sim"):
        load_config(raw=raw)
    with pytest.raises(ValueError, match=r"data\.kind: Input should be 'jet' or 'track'"):
        load_config(raw=make_raw(tmp_path, "r", data={"kind": "muon"}))
    # default family of a custom factory is MLPF; a registry name takes its family from the spec
    assert resolve_family(load_config(raw={**make_raw(tmp_path, "r"), "model": {"name": "a:b"}}).model) == "mlpf"
    mlpf = load_config(raw={**make_raw(tmp_path, "r"), "model": {"name": "mlpf-gnnlsh"}}).model
    assert resolve_family(mlpf) == "mlpf"
    with pytest.raises(ValueError, match="model.family: 'mlpf-gnnlsh' is a 'mlpf' model, not 'flashsim'"):
        resolve_family(load_config(raw=make_raw(tmp_path, "r", model={"name": "mlpf-gnnlsh"})).model)


def test_registry_flashsim_model_requires_kind(tmp_path):
    from hepzoo.models import registry

    name = "test-tiny-flashsim"
    spec_t = registry.TensorSpec("context", "float32", ("batch", 2))
    export = registry.ExportSpec(make_inputs=lambda b, n, s: {"context": torch.zeros(b, 2)})
    registry.register_model(name, family="flashsim", task="test", inputs=(spec_t,), outputs=(spec_t,),
                            export=export, permutation_tolerance=None)(lambda *, width=4: TinyFlashSim(2, 2, width))  # fmt: skip
    try:
        raw = make_raw(tmp_path, "r", model={"name": name, "family": None, "kwargs": {}})
        del raw["data"]["kind"]
        cfg = load_config(raw=raw)  # the config alone cannot know the family of a registry name
        with pytest.raises(ValueError, match=f"data.kind is required for flash-sim model '{name}'"):
            train(cfg)
    finally:
        registry.unregister_model(name)


@pytest.mark.parametrize("name", ["flashsim-jet", "flashsim-track"])
def test_example_configs_validate(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.model.name == name and cfg.data.kind == name.split("-")[1]
    assert [Path(p).name for p in cfg.data.train] == ["ttbar_train.root", "qcd_train.root"]
    assert [Path(p).name for p in cfg.data.val] == ["ttbar_val.root"]


# ---- normalisation and loss: hand values ----------------------------------------------------------------------


def test_normalization_stats_hand_values():
    ds = TableDataset([], batch_size=4)
    info = D.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    c_mean, c_std, t_mean, t_std = normalization_stats(ds, 100, info)
    torch.testing.assert_close(c_mean, torch.tensor([4.5, 3.0]))
    torch.testing.assert_close(c_std, torch.tensor([math.sqrt(8.25), 1.0]))  # constant column -> std 1
    t = torch.from_numpy(ds.target[ds.matched]).double()  # matched rows only
    torch.testing.assert_close(t_mean, t.mean(0).float())
    torch.testing.assert_close(t_std, t.std(0, unbiased=False).float())
    # bounded: stops after the batch that reaches max_rows (first 4 rows here)
    c_mean, c_std, _, _ = normalization_stats(ds, 3, info)
    torch.testing.assert_close(c_mean, torch.tensor([1.5, 3.0]))


def test_flashsim_loss_hand_values(tmp_path):
    class Fixed(nn.Module):  # log_prob = -(row index) of the matched rows, efficiency logit 0
        def forward(self, context, target, matched):
            return -context[matched.bool(), 0], torch.zeros(len(context))

    cfg = load_config(raw=make_raw(tmp_path, "r", loss={"nll_weight": 2.0, "eff_weight": 0.5}))
    task = FlashSimTask(cfg, D.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    batch = {"context": torch.tensor([[1.0], [2.0], [3.0], [4.0]]), "matched": torch.tensor([True, False, True, False]),
             "target": torch.zeros(4, 2)}  # fmt: skip
    norm = task.counts(batch)
    assert norm.tolist() == [4.0, 2.0]
    out = task.losses(Fixed(), batch, norm, lambda: torch.autocast("cpu", enabled=False))
    assert out["nll"].item() == pytest.approx((1 + 3) / 2)
    assert out["eff"].item() == pytest.approx(math.log(2.0))  # sigmoid(0) = 1/2 for every row
    assert out["total"].item() == pytest.approx(2.0 * 2.0 + 0.5 * math.log(2.0))
    out = task.losses(Fixed(), batch, torch.tensor([8.0, 1.0]), lambda: torch.autocast("cpu", enabled=False))
    assert out["nll"].item() == pytest.approx(4.0) and out["eff"].item() == pytest.approx(math.log(2.0) / 2)


# ---- the loop -------------------------------------------------------------------------------------------------


def _real(kind: str) -> str:
    mod = pytest.importorskip(f"hepzoo.models.flashsim_{kind}")
    return f"{mod.__name__}:flashsim_{kind}"


@pytest.mark.parametrize(
    "kind,model",
    [("jet", "tiny"), ("jet", "real"), ("track", "real")],
)
def test_flashsim_train_end_to_end(data_dir, kind, model):
    if model == "tiny":
        mcfg = {"kwargs": {"kind": kind}}
    else:
        mcfg = {"name": _real(kind), "kwargs": {"n_couplings": 2, "hidden": 16, "n_embed": 8}}
    out = f"e2e-{kind}-{model}"
    untrained = train(load_config(raw=make_raw(data_dir, out + "-u", kind, model=mcfg, optim={"lr": 1e-12, "epochs": 1})))["val"]
    result = train(load_config(raw=make_raw(data_dir, out, kind, model=mcfg)))
    recs = _records(data_dir / out / "metrics.jsonl")
    steps, vals = [r for r in recs if "loss" in r], [r for r in recs if "val" in r]
    assert len(vals) == 3 and result["step"] == result["total_steps"] == len(steps) > 3
    assert set(steps[0]["loss"]) == set(vals[0]["val"]) == {"total", "nll", "eff"}
    assert all(math.isfinite(r["loss"]["total"]) for r in steps)
    assert vals[-1]["val"]["total"] < vals[0]["val"]["total"]  # validation loss decreases over the epochs
    assert result["val"]["total"] < untrained["total"] - 0.1
    assert result["val"]["eff"] < untrained["eff"]  # learns the pT dependence of the efficiency

    # normalisation from the training rows (context: all rows, target: matched rows), stored in checkpoints
    ds = FlashSimDataset([str(data_dir / "train.root")], kind, step_size=16, batch_size=10**6)
    tab = {k: torch.cat([b[k] for b in ds]) for k in ("context", "matched", "target")}
    tgt = tab["target"][tab["matched"]].double()
    state = ckpt.load_model_weights(data_dir / out / "last.pt")
    torch.testing.assert_close(state["context_mean"], tab["context"].double().mean(0).float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state["target_mean"], tgt.mean(0).float(), atol=1e-4, rtol=1e-4)
    exp_std = tgt.std(0, unbiased=False).float()
    torch.testing.assert_close(state["target_std"], torch.where(exp_std > 1e-6, exp_std, 1.0), atol=1e-4, rtol=1e-4)


def test_flashsim_resume_is_exact(data_dir):
    """N steps uninterrupted == K steps, stop, resume, N - K steps (dropout and dequantisation noise)."""
    n_total, k = 15, 5
    common = {"model": {"kwargs": {"kind": "jet", "dropout": 0.2}}, "optim": {"epochs": 3, "max_steps": n_total}}
    a = train(load_config(raw=make_raw(data_dir, "ra", **common)))
    per_epoch = a["total_steps"] // 3
    assert k < per_epoch < n_total  # K mid-epoch 0, N after a validation
    b_raw = make_raw(data_dir, "rb", **common)
    b_raw["optim"]["max_steps"] = k
    assert train(load_config(raw=b_raw))["step"] == k
    b_raw["optim"]["max_steps"] = n_total
    b_raw["resume"] = "auto"
    b = train(load_config(raw=b_raw))
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    for name in sa:
        torch.testing.assert_close(sb[name], sa[name], rtol=0, atol=1e-6, msg=name)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "time"} for r in recs]  # noqa: E731
    assert strip(_records(data_dir / "ra" / "metrics.jsonl")) == strip(_records(data_dir / "rb" / "metrics.jsonl"))


def test_dataset_hook(tmp_path):
    """``data.dataset`` plugs in another table source; normalisation comes from its rows."""
    raw = make_raw(tmp_path, "hook", data={"dataset": "test_training_flashsim:TableDataset", "batch_size": 4,
                                           "train": ["unused.root"], "val": ["unused.root"]},
                   model={"kwargs": {"kind": "jet"}, "name": "test_training_flashsim:tiny_two"}, optim={"epochs": 1})  # fmt: skip
    result = train(load_config(raw=raw))
    assert result["step"] == 3 and math.isfinite(result["val"]["total"])
    torch.testing.assert_close(result["model"].context_mean, torch.tensor([4.5, 3.0]))
    with pytest.raises(ValueError, match="data.dataset 'nope:X': cannot import"):
        train(load_config(raw=make_raw(tmp_path, "hook", data={"dataset": "nope:X"})))


def tiny_two(kind: str = "jet") -> TinyFlashSim:
    return TinyFlashSim(2, 2, discrete=())


def test_yaml_roundtrip_of_new_fields(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(make_raw(tmp_path, "r")))
    cfg = load_config(p, ["data.kind=track", "data.norm_rows=500", "loss.nll_weight=0.5"])
    assert (cfg.data.kind, cfg.data.norm_rows, cfg.loss.nll_weight) == ("track", 500, 0.5)
