"""Training tasks: what the loop needs to know about one model family (data, loss, validation, preparation).

The loop (``hepzoo.training.loop``) is family-agnostic; a :class:`Task` supplies

* ``make_loader(paths, train=)`` — the DataLoader of ready batches (dicts of tensors);
* ``count_batches(loader, info)`` — batches one rank sees per epoch (the schedule length);
* ``train_module(net)`` — the module the loop runs (and DDP wraps): the model itself, or a thin objective
  wrapper whose ``forward`` calls the model's training methods, so DDP's gradient hooks see them;
* ``counts(batch)`` — the loss denominators of one batch (summed over ranks by the loop, see ``loop.py``);
* ``losses(module, batch, norm, autocast)`` — all loss components (``components``, ``"total"`` first);
* ``val_sums`` — the components that validation sums, each with the index of its denominator in ``counts``,
  and ``finalize_val`` — derived components (sums, ``total``) from the per-element means;
* ``prepare(net, loader, info)`` — one-off set-up of a fresh run (flash-sim: normalisation statistics).

Families: ``"mlpf"`` (:class:`MLPFTask`: ``MLPFDataset`` + ``mlpf_loss``) and ``"flashsim"``
(:class:`FlashSimTask`); each :class:`~hepzoo.models.families.Family` names its task (``training_task``). The
family comes from ``model.family`` in the config, else from the registry spec (``get_spec(name).family``); a
``'package.module:factory'`` model without ``model.family`` is MLPF.

Flash-sim: batches are rows of an object table (``FlashSimDataset``: ``context [B,C]``, ``matched [B]``,
``target [B,D]``). Loss ``total = nll_weight * nll + eff_weight * eff`` where ``nll`` is the mean of
``-model.log_prob(target, context)`` over matched rows and ``eff`` the mean binary cross-entropy of
``model.efficiency_logit(context)`` against ``matched`` over all rows. If the model has a ``dequantize(target)``
method (noise on discrete target columns) it is applied to the matched targets before ``log_prob``, in
training and in validation (which runs under a fixed seed, so it is reproducible). On a fresh run (not on
resume, not when fine-tuning from ``model.init_weights``) ``prepare`` reads up to ``data.norm_rows`` training
rows per process, computes context mean/std over all rows and target mean/std over matched rows (summed over
DDP ranks, so every rank gets the same numbers; a constant column gets std 1) and calls
``model.set_normalization(context_mean, context_std, target_mean, target_std)``; the model keeps them as
buffers, so checkpoints carry them.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hepzoo.datasets import io
from hepzoo.datasets.loader import MLPFDataset, element_counts, make_dataloader
from hepzoo.datasets.ragged import group_by_bucket
from hepzoo.datasets.schema import ElementFeature
from hepzoo.models.families import MLPF, Family, get_family
from hepzoo.training import distributed as D
from hepzoo.training.config import ModelConfig, TrainConfig
from hepzoo.training.losses import COMPONENTS, REGRESSION_NAMES, loss_counts, mlpf_loss

AutocastFactory = Callable[[], contextlib.AbstractContextManager]

FLASHSIM_COMPONENTS: tuple[str, ...] = ("total", "nll", "eff")


def resolve_family(cfg: ModelConfig) -> Family:
    """``model.family`` if set (checked against the registry for registry names), else the spec's family."""
    if ":" in cfg.name:
        return get_family(cfg.family) if cfg.family else MLPF
    from hepzoo.models import get_spec

    try:
        family = get_spec(cfg.name).family
    except KeyError as err:  # UnknownModelError lists the registered names
        raise ValueError(f"model.name: {err}") from None
    if cfg.family is not None and cfg.family != family:
        raise ValueError(f"model.family: {cfg.name!r} is a {family!r} model, not {cfg.family!r}")
    return family


def make_task(cfg: TrainConfig, info: D.DistInfo) -> Task:
    """The training task of the model's family (``Family.training_task``)."""
    return resolve_family(cfg.model).training_task(cfg, info)


def set_epoch(dataset: Any, epoch: int) -> None:
    fn = getattr(dataset, "set_epoch", None)
    if callable(fn):
        fn(epoch)


class Task:
    """Interface (see the module docstring); subclasses fill it in."""

    components: tuple[str, ...] = ()
    n_counts: int = 0  # length of ``counts(batch)``
    val_sums: dict[str, int] = {}

    def __init__(self, cfg: TrainConfig, info: D.DistInfo):
        self.cfg, self.info = cfg, info

    def make_loader(self, paths: Sequence[str], *, train: bool) -> torch.utils.data.DataLoader:
        raise NotImplementedError

    def count_batches(self, loader: torch.utils.data.DataLoader) -> int:
        raise NotImplementedError

    def train_module(self, net: torch.nn.Module) -> torch.nn.Module:
        return net

    def prepare(self, net: torch.nn.Module, loader: torch.utils.data.DataLoader) -> None:
        """One-off set-up before the first step of a fresh run (default: nothing)."""

    def counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def n_events(self, batch: dict[str, torch.Tensor]) -> int:
        """Events (MLPF) or table rows (flash-sim) in one batch: the unit of "events seen" in the logs."""
        return int(next(iter(batch.values())).shape[0])

    def losses(
        self, module: torch.nn.Module, batch: dict[str, torch.Tensor], norm: torch.Tensor, autocast: AutocastFactory
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def finalize_val(self, means: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError


# ---- MLPF ---------------------------------------------------------------------------------------------------


def count_batches_per_epoch(ds: MLPFDataset, info: D.DistInfo) -> int:
    """Batches one rank sees per epoch (all batches / world size): reads only tracks and clusters once."""
    total = 0
    for path, start, stop in ds.units[info.rank :: info.world_size]:
        chunk = io.read_range(path, start, stop, collections=["trk", "clu"], mapping=ds.mapping)
        ntrk, nclu = element_counts(chunk)
        groups = group_by_bucket(ntrk + nclu, ds.buckets)
        total += sum(math.ceil(len(idx) / ds.batch_size) for idx in groups.values())
    t = D.all_reduce_sum(torch.tensor([total], dtype=torch.float64, device=info.device), info)
    return int(t.item()) // info.world_size


class MLPFTask(Task):
    """Element-aligned MLPF training: ``MLPFDataset`` batches and ``mlpf_loss``."""

    components = COMPONENTS
    n_counts = 4
    val_sums = {"cls": 0, "charge": 1, **{n: 2 for n in REGRESSION_NAMES}, "jet": 3}

    def __init__(self, cfg: TrainConfig, info: D.DistInfo):
        super().__init__(cfg, info)
        lc = cfg.loss
        self.loss_kw = {
            "gamma": lc.focal_gamma,
            "class_weights": lc.class_weights,
            "huber_delta": lc.huber_delta,
            "weights": (lc.cls_weight, lc.charge_weight, lc.reg_weight),
            "energy_weight_power": lc.energy_weight_power,
            "energy_weight_source": lc.energy_weight_source,
            "jet_weight": lc.jet_weight,
            "jet_scale": lc.jet_scale,
            "jet_class_gradient": lc.jet_class_gradient,
            "jet_vector": lc.jet_vector,
            "jet_pt_power": lc.jet_pt_power,
        }
        self.jets = lc.jet_weight > 0

    def make_loader(self, paths: Sequence[str], *, train: bool) -> torch.utils.data.DataLoader:
        d, seed = self.cfg.data, self.cfg.seed
        extra = {"seed": seed, "pin_memory": self.info.device.type == "cuda"} if train else {}
        return make_dataloader(
            paths, batch_size=d.batch_size, step_size=d.step_size, buckets=d.buckets, num_workers=d.num_workers,
            shuffle=d.shuffle and train, generator=torch.Generator().manual_seed(seed), jets=self.jets, **extra,
        )  # fmt: skip

    def count_batches(self, loader: torch.utils.data.DataLoader) -> int:
        return count_batches_per_epoch(loader.dataset, self.info)

    def counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_counts(
            batch["target_cls"], batch["mask"], batch["target_reg"], batch.get("jet_index"), self.loss_kw["jet_pt_power"]
        )

    def losses(self, module, batch, norm, autocast):
        with autocast():
            outs = module(batch["features"], batch["mask"])
        energy = batch["features"][..., int(ElementFeature.E)]
        return mlpf_loss(
            *outs, batch["target_cls"], batch["target_reg"], batch["mask"], norm=norm, element_energy=energy,
            jet_index=batch.get("jet_index"), **self.loss_kw,
        )  # fmt: skip

    def finalize_val(self, means: dict[str, float]) -> dict[str, float]:
        val = dict(means)
        val["reg"] = sum(val[n] for n in REGRESSION_NAMES)
        w = self.loss_kw["weights"]
        val["total"] = w[0] * val["cls"] + w[1] * val["charge"] + w[2] * val["reg"]
        val["total"] += self.loss_kw["jet_weight"] * val["jet"]
        return {k: val[k] for k in COMPONENTS}


# ---- flash-sim ----------------------------------------------------------------------------------------------


class FlashSimObjective(torch.nn.Module):
    """What the loop runs for a flash-sim model: ``forward(context, target, matched)`` ->
    (``log_prob`` of the matched rows ``[M]``, ``efficiency_logit`` of all rows ``[B]``).

    A module of its own so that DDP wraps it and sees both calls in one ``forward`` (calling
    ``model.log_prob`` on a DDP-wrapped model's ``.module`` would bypass gradient synchronisation).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, context: torch.Tensor, target: torch.Tensor, matched: torch.Tensor):
        m = matched.bool()
        t, c = target[m], context[m]
        deq = getattr(self.model, "dequantize", None)
        if callable(deq):
            t = deq(t)
        return self.model.log_prob(t, c), self.model.efficiency_logit(context)


def _import_factory(spec: str, key: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{key} {spec!r}: cannot import the factory ({err})") from None


def _flashsim_dataset_factory(spec: str | None) -> Callable[..., Any]:
    if spec is not None:
        return _import_factory(spec, "data.dataset")
    try:
        from hepzoo.datasets.flashsim_loader import FlashSimDataset
    except ImportError as err:  # pragma: no cover - the data module ships with the flash-sim models
        raise ValueError(f"flash-sim training needs hepzoo.datasets.flashsim_data ({err})") from None
    return FlashSimDataset


class FlashSimTask(Task):
    """Flash-sim training on object tables (see the module docstring)."""

    components = FLASHSIM_COMPONENTS
    n_counts = 2
    val_sums = {"nll": 1, "eff": 0}

    def __init__(self, cfg: TrainConfig, info: D.DistInfo):
        super().__init__(cfg, info)
        if cfg.data.kind is None:
            family = resolve_family(cfg.model)
            kinds = " or ".join(repr(k) for k in family.kinds)
            raise ValueError(f"data.kind is required for {family.label} model {cfg.model.name!r}: {kinds}")
        self.factory = _flashsim_dataset_factory(cfg.data.dataset)
        self.weights = (cfg.loss.nll_weight, cfg.loss.eff_weight)

    def make_loader(self, paths: Sequence[str], *, train: bool) -> torch.utils.data.DataLoader:
        d, seed = self.cfg.data, self.cfg.seed
        ds = self.factory(
            list(paths), kind=d.kind, step_size=d.step_size, batch_size=d.batch_size,
            shuffle=d.shuffle and train, seed=seed,
        )  # fmt: skip
        return torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=d.num_workers, generator=torch.Generator().manual_seed(seed),
            pin_memory=train and self.info.device.type == "cuda",
        )  # fmt: skip

    def count_batches(self, loader: torch.utils.data.DataLoader) -> int:
        """Iterates this rank's shard of epoch 0 once (set ``optim.total_steps`` to skip this pass)."""
        ds = loader.dataset
        set_epoch(ds, 0)
        total = sum(1 for _ in ds)
        t = D.all_reduce_sum(torch.tensor([total], dtype=torch.float64, device=self.info.device), self.info)
        return int(t.item()) // self.info.world_size

    def train_module(self, net: torch.nn.Module) -> torch.nn.Module:
        return FlashSimObjective(net)

    def prepare(self, net: torch.nn.Module, loader: torch.utils.data.DataLoader) -> None:
        set_norm = getattr(net, "set_normalization", None)
        if not callable(set_norm):
            raise TypeError(f"flash-sim model {self.cfg.model.name!r} has no set_normalization method")
        stats = normalization_stats(loader.dataset, self.cfg.data.norm_rows, self.info)
        set_norm(*(s.to(self.info.device) for s in stats))

    def counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m = batch["matched"]
        return torch.stack([torch.tensor(float(m.numel()), device=m.device), m.bool().sum().float()])

    def losses(self, module, batch, norm, autocast):
        with autocast():
            log_prob, logit = module(batch["context"], batch["target"], batch["matched"])
        norm = norm.to(device=logit.device, dtype=torch.float32).clamp(min=1.0)
        nll = -log_prob.float().sum() / norm[1]
        eff = F.binary_cross_entropy_with_logits(
            logit.float(), batch["matched"].to(torch.float32), reduction="sum"
        ) / norm[0]
        return {"total": self.weights[0] * nll + self.weights[1] * eff, "nll": nll, "eff": eff}

    def finalize_val(self, means: dict[str, float]) -> dict[str, float]:
        return {"total": self.weights[0] * means["nll"] + self.weights[1] * means["eff"], **means}


def normalization_stats(dataset: Any, max_rows: int, info: D.DistInfo) -> tuple[torch.Tensor, ...]:
    """(context mean, context std, target mean, target std), float32, from at most ``max_rows`` rows of this
    rank's epoch-0 shard; sums over DDP ranks, so every rank gets the same values. Target stats use matched
    rows only. Raises ``ValueError`` when there are no rows or no matched rows."""
    set_epoch(dataset, 0)
    acc: list[torch.Tensor] | None = None
    n_rows = 0
    for batch in dataset:
        ctx = torch.as_tensor(batch["context"]).double()
        m = torch.as_tensor(batch["matched"]).bool()
        tgt = torch.as_tensor(batch["target"]).double()[m]
        part = [
            torch.tensor([ctx.shape[0]], dtype=torch.float64), ctx.sum(0), (ctx * ctx).sum(0),
            torch.tensor([tgt.shape[0]], dtype=torch.float64), tgt.sum(0), (tgt * tgt).sum(0),
        ]  # fmt: skip
        acc = part if acc is None else [a + p for a, p in zip(acc, part)]
        n_rows += ctx.shape[0]
        if n_rows >= max_rows:
            break
    if acc is None:
        raise ValueError(f"flash-sim normalisation: no training rows in {list(map(str, getattr(dataset, 'files', [])))}")
    sizes = [a.numel() for a in acc]
    flat = D.all_reduce_sum(torch.cat(acc).to(info.device), info).cpu()
    n_c, s_c, ss_c, n_t, s_t, ss_t = torch.split(flat, sizes)
    if n_t.item() == 0:
        raise ValueError("flash-sim normalisation: the training rows read have no matched rows")

    def mean_std(n: torch.Tensor, s: torch.Tensor, ss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = s / n
        std = (ss / n - mean * mean).clamp(min=0.0).sqrt()
        std = torch.where(std > 1e-6 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return mean.float(), std.float()

    return (*mean_std(n_c, s_c, ss_c), *mean_std(n_t, s_t, ss_t))
