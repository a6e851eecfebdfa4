"""The training loop (MLPF and flash-sim models): seeded, AdamW + warm-up/cosine schedule, gradient clipping, autocast, validation
each epoch, JSON-lines metrics, best/last checkpoints, exact resume, DDP under ``torchrun``.

``train(cfg)`` runs a whole training and returns a summary dict. Files in ``cfg.output_dir``:
``config.yaml`` (the validated config), ``metrics.jsonl`` (one JSON object per logged step, with ``step``,
``epoch``, ``events`` (training events seen so far, all ranks), ``lr``, ``loss`` components, ``time``; one per
epoch with ``val``, and one per ``snapshot_every_steps`` with ``val`` and ``snapshot``), ``last.pt`` (every
``checkpoint_every_steps`` steps, at ``optim.max_steps`` and at each epoch end) and ``best.pt`` (lowest
validation ``total``) and, with ``snapshot_every_steps``, ``snapshots/step_NNNNNNN.pt`` (weights only) for
learning curves (validation loss and physics metrics against events seen).

Determinism and resume: everything is seeded from ``cfg.seed`` (python, numpy, torch; the loader's shuffle
uses ``(seed, epoch)``; the DataLoader gets its own torch generator so iterating it never touches the global
RNG). A checkpoint stores ``(epoch, batch_in_epoch, step)`` and every rank's RNG state; resuming rebuilds that
epoch's data order, skips ``batch_in_epoch`` batches without computing on them, then restores the RNG
states, so K steps + resume + (N - K) steps equals N uninterrupted steps.

DDP: every step all ranks sum ``[has a batch, element counts]`` in one all-reduce; the epoch ends for all when
any rank runs out of batches (shards can differ in length), and loss denominators are the global counts /
world size, so the averaged gradient is the gradient of the global mean over all elements of the step.

Model families: data, loss and one-off preparation come from a :class:`~hepzoo.training.tasks.Task` chosen by
the model's family (``tasks.make_task``); everything else here is shared. Flash-sim runs set the model's
normalisation from training data statistics on a fresh run (see ``hepzoo.training.tasks``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from hepzoo.training import checkpoint as ckpt
from hepzoo.training import distributed as D
from hepzoo.training.config import ModelConfig, TrainConfig, config_to_dict
from hepzoo.training.tasks import count_batches_per_epoch, make_task, set_epoch

__all__ = ["WarmupCosine", "Trainer", "build_model", "count_batches_per_epoch", "seed_everything", "train"]

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
SNAPSHOTS = "snapshots"

EpochCallback = Callable[[int, dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """A registry model (``hepzoo.models.create_model``) or ``'package.module:factory'`` for custom models."""
    if ":" in cfg.name:
        module_name, _, attr = cfg.name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model.name {cfg.name!r}: cannot import the factory ({err})") from None
        return factory(**cfg.kwargs)
    from hepzoo.models import create_model

    try:
        return create_model(cfg.name, **cfg.kwargs)
    except KeyError as err:  # UnknownModelError lists the registered names
        raise ValueError(f"model.name: {err}") from None
    except TypeError as err:  # an unknown or ill-typed builder keyword
        raise ValueError(f"model.kwargs: {err}") from None


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, cosine from 1 to ``min_ratio`` until ``total``, then flat."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    cuda = device.type == "cuda"
    if precision == "fp32":
        return None
    if precision == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16":
        if not cuda:
            raise ValueError("precision 'fp16' needs a CUDA device (use bf16 or fp32 on CPU)")
        return torch.float16
    if cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported on {torch.cuda.get_device_name(device)}")
    return torch.bfloat16


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Trainer:
    """One training run (``train`` is the entry point). Methods are the steps of the loop, in order."""

    def __init__(
        self,
        cfg: TrainConfig,
        info: D.DistInfo,
        model: torch.nn.Module | None = None,
        on_epoch_end: EpochCallback | None = None,
    ):
        self.cfg, self.info = cfg, info
        self.on_epoch_end = on_epoch_end
        self.device = info.device
        self.out = Path(cfg.output_dir)
        self.task = make_task(cfg, info)
        self.t0 = time.perf_counter()

        seed_everything(cfg.seed)  # identical initial weights on every rank
        net = model if model is not None else build_model(cfg.model)
        if cfg.model.init_weights:
            ckpt.load_initial_weights(net, cfg.model.init_weights)
        net.to(self.device)
        self.net = net  # the bare module (state dicts, validation)

        self.train_loader = self.task.make_loader(cfg.data.train, train=True)
        self.val_loader = self.task.make_loader(cfg.data.val, train=False) if cfg.data.val else None

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.amp_dtype = _autocast_dtype(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.events_seen = 0
        self.best_val: float | None = None
        self.last_val: dict[str, float] | None = None
        self.rng_to_restore: dict[str, Any] | None = None
        state = self._resume_state()
        self.resumed = state is not None
        if state is None and not cfg.model.init_weights:  # resume/fine-tune: buffers come with the weights
            self.task.prepare(net, self.train_loader)
        self.total_steps = o.total_steps or (state or {}).get("total_steps") or (
            o.epochs * max(1, self.task.count_batches(self.train_loader))
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(min(o.warmup_steps, self.total_steps), self.total_steps, o.min_lr_ratio)
        )
        if state is not None:
            self._load_state(state)
        seed_everything(cfg.seed + info.rank)  # per-rank streams (dropout) for a fresh run
        self.objective = self.task.train_module(net)  # what a step runs (the model, or a wrapper of it)
        self.model = D.wrap_model(self.objective, info)

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _resume_state(self) -> dict[str, Any] | None:
        r = self.cfg.resume
        if r is None:
            return None
        path = self.out / LAST if r == "auto" else Path(r)
        if r == "auto" and not path.is_file():
            return None
        return ckpt.load_checkpoint(path, map_location=self.device)

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.events_seen = int(state.get("events_seen", 0))
        self.best_val = state.get("best_val")
        rngs = state.get("rng") or []
        if len(rngs) == self.info.world_size:  # else: different world size, keep fresh per-rank seeds
            self.rng_to_restore = rngs[self.info.rank]

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "events_seen": self.events_seen,
            "total_steps": self.total_steps,
            "best_val": self.best_val,
            "config": config_to_dict(self.cfg),
        }

    def save(self, *names: str) -> None:
        """Collective (gathers every rank's RNG state); rank 0 writes."""
        rngs = D.all_gather_objects(ckpt.capture_rng_state(), self.info)
        if self.info.is_main:
            state = {**self._state(), "rng": rngs}
            for name in names:
                ckpt.save_checkpoint(self.out / name, state)

    def log(self, record: dict[str, Any]) -> None:
        if self.info.is_main:
            record["time"] = round(time.perf_counter() - self.t0, 3)
            with open(self.out / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    # ---- one step ----------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _next_global(self, it: Iterator) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor, int]:
        """This rank's next batch, the loss denominators and the events of this step on all ranks, or
        (None, _, 0) when any rank has run out."""
        batch = next(it, None)
        if batch is not None:
            batch = _to(batch, self.device)
            counts = self.task.counts(batch).to(torch.float32)
            head = torch.tensor([1.0, float(self.task.n_events(batch))], dtype=torch.float32, device=self.device)
            stats = torch.cat([head, counts])
        else:
            stats = torch.zeros(2 + self.task.n_counts, dtype=torch.float32, device=self.device)
        D.all_reduce_sum(stats, self.info)
        if stats[0].item() < self.info.world_size:
            return None, stats, 0
        return batch, stats[2:] / self.info.world_size, int(stats[1].item())

    def train_step(self, batch: dict[str, torch.Tensor], norm: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = self.task.losses(self.model, batch, norm, self._autocast)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.cfg.optim.grad_clip
        if self.scaler is not None:
            self.scaler.scale(losses["total"]).backward()
            self.scaler.unscale_(self.optimizer)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.scaler.step(self.optimizer)
            scale = self.scaler.get_scale()
            self.scaler.update()
            if self.scaler.get_scale() < scale:  # inf/nan gradients: the optimiser step was skipped
                return {k: v.detach() for k, v in losses.items()}
        else:
            losses["total"].backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.optimizer.step()
        self.scheduler.step()
        return {k: v.detach() for k, v in losses.items()}

    # ---- validation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean loss components over all validation elements of all ranks (bare module: no DDP collectives)."""
        if self.val_loader is None:
            return None
        task = self.task
        names = list(task.val_sums)
        sums = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        counts = torch.zeros(task.n_counts, dtype=torch.float64, device=self.device)
        ones = torch.ones(task.n_counts, device=self.device)
        self.net.eval()
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # reproducible (noise inputs), leaves the training RNG alone
            torch.manual_seed(self.cfg.seed)
            for batch in self.val_loader:
                batch = _to(batch, self.device)
                parts = task.losses(self.objective, batch, ones, self._autocast)
                sums += torch.stack([parts[n] for n in names]).double()
                counts += task.counts(batch).double()
        D.all_reduce_sum(sums, self.info)
        D.all_reduce_sum(counts, self.info)
        self.net.train()
        means = {n: float(s / counts[task.val_sums[n]].clamp(min=1)) for n, s in zip(names, sums)}
        return task.finalize_val(means)

    # ---- the loop ----------------------------------------------------------------------------------------
    def _done(self) -> bool:
        return self.cfg.optim.max_steps is not None and self.step >= self.cfg.optim.max_steps

    def run_epoch(self) -> bool:
        """Train the rest of ``self.epoch``; False if ``max_steps`` stopped it before its end."""
        cfg = self.cfg
        set_epoch(self.train_loader.dataset, self.epoch)
        it = iter(self.train_loader)
        for _ in range(self.batch_in_epoch):  # resume: the same seeded order, skip what was consumed
            if next(it, None) is None:
                break
        if self.rng_to_restore is not None:
            ckpt.restore_rng_state(self.rng_to_restore)
            self.rng_to_restore = None
        per_epoch = self.total_steps // cfg.optim.epochs if cfg.optim.total_steps is None else None
        bar = tqdm(
            total=per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}", unit="batch",
            disable=not (cfg.progress and self.info.is_main), dynamic_ncols=True,
        )  # fmt: skip
        try:
            while not self._done():
                batch, norm, n_events = self._next_global(it)
                if batch is None:
                    break
                lr = self.scheduler.get_last_lr()[0]
                losses = self.train_step(batch, norm)
                self.step += 1
                self.batch_in_epoch += 1
                self.events_seen += n_events
                bar.update(1)
                if self.step % cfg.log_every_steps == 0 or self.step == 1:
                    vals = torch.stack([losses[k] for k in self.task.components])
                    vals = D.all_reduce_sum(vals, self.info) / self.info.world_size
                    loss = {k: round(float(v), 6) for k, v in zip(self.task.components, vals)}
                    bar.set_postfix(loss=f"{loss['total']:.4f}", lr=f"{lr:.2e}")
                    self.log({"step": self.step, "epoch": self.epoch, "events": self.events_seen, "lr": lr, "loss": loss})
                if cfg.snapshot_every_steps and self.step % cfg.snapshot_every_steps == 0:
                    self.snapshot()
                if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                    self.save(LAST)
        finally:
            bar.close()
        return not self._done()

    def snapshot(self) -> None:
        """Validate (own RNG, the training streams are untouched) and keep the weights for learning curves."""
        val = self.validate()
        if self.info.is_main:
            path = self.out / SNAPSHOTS / f"step_{self.step:07d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            ckpt.save_checkpoint(path, {"model": self.net.state_dict(), "step": self.step, "events_seen": self.events_seen})
            rel = str(path.relative_to(self.out))
            self.log({"step": self.step, "epoch": self.epoch, "events": self.events_seen, "val": val, "snapshot": rel})

    def _epoch_summary(self) -> dict[str, Any]:
        """What ``on_epoch_end`` gets: the epoch's validation components and where its checkpoint is."""
        return {"step": self.step, "val": self.last_val, "best_val": self.best_val, "last": self.out / LAST}

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            if not self.resumed:  # a fresh run starts a fresh log
                (self.out / METRICS).unlink(missing_ok=True)
        self.model.train()
        while self.epoch < cfg.optim.epochs:
            finished = self.run_epoch()
            if not finished:  # max_steps reached inside the epoch
                self.save(LAST)
                break
            self.last_val = self.validate()
            names = [LAST]
            if self.last_val is not None:
                self.log({"step": self.step, "epoch": self.epoch, "events": self.events_seen, "val": self.last_val})
                if self.best_val is None or self.last_val["total"] < self.best_val:
                    self.best_val = self.last_val["total"]
                    names.append(BEST)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.save(*names)
            if self.on_epoch_end is not None and self.info.is_main:
                self.on_epoch_end(self.epoch - 1, self._epoch_summary())
            if self._done():
                break
        return {
            "step": self.step,
            "epoch": self.epoch,
            "total_steps": self.total_steps,
            "best_val": self.best_val,
            "val": self.last_val,
            "last": self.out / LAST,
            "best": self.out / BEST if (self.out / BEST).exists() else None,
            "model": self.net,
        }


def train(
    cfg: TrainConfig, *, model: torch.nn.Module | None = None, on_epoch_end: EpochCallback | None = None
) -> dict[str, Any]:
    """Run a training described by ``cfg`` (``model``: use this module instead of building ``cfg.model``).

    ``on_epoch_end(epoch, metrics)`` (rank 0 only) runs after each completed epoch's validation and
    checkpoint, with the 0-based epoch and ``{"step", "val", "best_val", "last"}``; hyper-parameter search
    (``hepzoo.training.tune``) reports from it. It may raise to stop the run.

    Under torchrun every rank calls this; the process group is created here and destroyed at the end.
    Returns ``{"step", "epoch", "total_steps", "best_val", "val", "last", "best", "model"}``.
    """
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.init_distributed(cfg.device)
    try:
        return Trainer(cfg, info, model, on_epoch_end).run()
    finally:
        if owns_group:
            D.cleanup_distributed()
