"""Shared pieces of the flash-simulation models: a conditional normalising flow plus an efficiency net.

Interface of every flash-sim model (the exported graph is ``forward``)::

    efficiency, sample = model(context, noise)
        context [B, C] float32, raw physical columns (a ``flashsim_data`` context enum's order)
        noise   [B, D] float32, standard normal (an input, so runs are reproducible from a seed)
        efficiency [B] float32 in [0, 1]: probability that the object is reconstructed
        sample  [B, D] float32, physical units (a target enum's order); discrete columns rounded
    model.log_prob(target [B, D], context [B, C]) -> [B]   # log density in physical units (matched rows)
    model.efficiency_logit(context [B, C]) -> [B]          # for BCE against ``matched``
    model.dequantize(target [, generator]) -> target + U(-1/2, 1/2) on the discrete columns (training input
                                               of log_prob; sampling rounds those columns back)
    model.set_normalization(context_mean, context_std, target_mean, target_std)  # buffers, exported
    model.to_noise(target, context) / model.from_noise(noise, context)  # the flow and its inverse, physical
                                               units, no rounding (from_noise(to_noise(x)) == x)

Flow design (export-friendly by construction): ``n_couplings`` conditional affine couplings (RealNVP).
Each coupling keeps the first ``D // 2`` columns of its (permuted) input, and maps the others as
``y = x * exp(s) + t`` with ``(s, t) = MLP([x_kept, embedding(context)])`` and ``s`` soft-clamped
(``clamp * tanh(s / clamp)``) so ``exp`` cannot overflow. Between couplings the columns are permuted by
fixed index gathers (``index_select``; the permutations are fixed from ``seed`` at build time and stored
as buffers). The context goes through a small MLP embedding shared by all couplings; the efficiency has
its own MLP on the normalised context. The last layer of every coupling MLP starts at zero (the untrained
flow is the identity in normalised space). Only MatMul/elementwise/Gather/Concat/Slice/Round/Where ops:
no searchsorted, no boolean-mask indexing, nothing data-dependent in shape.

Direction: ``to_noise`` (normalise, then the couplings) is the density direction used by ``log_prob``;
``from_noise`` (the inverse couplings in reverse, then de-normalise) is the sampling path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from hepzoo.models.registry import ExportSpec, TensorSpec

_LOG_2PI = math.log(2 * math.pi)


def _mlp(n_in: int, hidden: int, n_out: int, n_hidden_layers: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """One conditional affine coupling on ``[B, D]``: keeps columns ``[:n_keep]``, transforms the rest."""

    def __init__(self, dim: int, n_embed: int, hidden: int, scale_clamp: float) -> None:
        super().__init__()
        self.n_keep = dim // 2
        self.n_out = dim - self.n_keep
        self.scale_clamp = float(scale_clamp)
        self.net = _mlp(self.n_keep + n_embed, hidden, 2 * self.n_out)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, kept: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(torch.cat([kept, emb], dim=-1))
        s, t = h[:, : self.n_out], h[:, self.n_out :]
        return self.scale_clamp * torch.tanh(s / self.scale_clamp), t

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, rest = x[:, : self.n_keep], x[:, self.n_keep :]
        s, t = self._st(kept, emb)
        return torch.cat([kept, rest * torch.exp(s) + t], dim=-1), s.sum(dim=-1)

    def inverse(self, y: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        kept, rest = y[:, : self.n_keep], y[:, self.n_keep :]
        s, t = self._st(kept, emb)
        return torch.cat([kept, (rest - t) * torch.exp(-s)], dim=-1)


class FlashSimFlow(nn.Module):
    """Conditional RealNVP flow + efficiency network (see the module docstring for the interface)."""

    element_granularity = 1

    def __init__(
        self,
        context_names: Sequence[str],
        target_names: Sequence[str],
        discrete: Sequence[int] = (),
        *,
        n_couplings: int = 6,
        hidden: int = 64,
        n_embed: int = 32,
        scale_clamp: float = 3.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.context_names = tuple(context_names)
        self.target_names = tuple(target_names)
        C, D = len(self.context_names), len(self.target_names)
        if D < 2:
            raise ValueError("FlashSimFlow needs at least 2 target columns (coupling layers split them)")
        self.n_context, self.n_target = C, D
        self.discrete = tuple(int(i) for i in discrete)
        is_discrete = torch.zeros(D, dtype=torch.bool)
        is_discrete[list(self.discrete)] = True
        self.register_buffer("is_discrete", is_discrete, persistent=False)
        self.register_buffer("context_mean", torch.zeros(C))
        self.register_buffer("context_std", torch.ones(C))
        self.register_buffer("target_mean", torch.zeros(D))
        self.register_buffer("target_std", torch.ones(D))

        self.embed = nn.Sequential(nn.Linear(C, hidden), nn.GELU(), nn.Linear(hidden, n_embed), nn.GELU())
        self.eff = _mlp(C, hidden, 1)
        self.couplings = nn.ModuleList(AffineCoupling(D, n_embed, hidden, scale_clamp) for _ in range(n_couplings))
        # fixed permutation applied before each coupling (the first one too), and its inverse
        g = torch.Generator().manual_seed(int(seed))
        perms = []
        for k in range(n_couplings):
            p = torch.roll(torch.arange(D), shifts=k % D) if k < 2 else torch.randperm(D, generator=g)
            perms.append(p)
        self.register_buffer("perms", torch.stack(perms), persistent=False)
        self.register_buffer("inv_perms", torch.argsort(torch.stack(perms), dim=-1), persistent=False)

    # ---- normalisation ----

    @torch.no_grad()
    def set_normalization(self, context_mean, context_std, target_mean, target_std) -> None:
        """Set the normalisation buffers (array-likes of length C, C, D, D); stds are floored at 1e-6."""
        for name, v, n in (
            ("context_mean", context_mean, self.n_context),
            ("context_std", context_std, self.n_context),
            ("target_mean", target_mean, self.n_target),
            ("target_std", target_std, self.n_target),
        ):
            t = torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1)
            if t.numel() != n:
                raise ValueError(f"set_normalization: {name} has {t.numel()} entries, expected {n}")
            if name.endswith("std"):
                t = t.clamp(min=1e-6)
            getattr(self, name).copy_(t)

    def _context(self, context: torch.Tensor) -> torch.Tensor:
        return (context - self.context_mean) / self.context_std

    # ---- efficiency ----

    def efficiency_logit(self, context: torch.Tensor) -> torch.Tensor:
        return self.eff(self._context(context)).squeeze(-1)

    # ---- flow ----

    def _transform(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros_like(x[:, 0])
        for k, c in enumerate(self.couplings):
            x, ld = c(x.index_select(-1, self.perms[k]), emb)
            logdet = logdet + ld
        return x, logdet

    def _inverse(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for k in range(len(self.couplings) - 1, -1, -1):
            z = self.couplings[k].inverse(z, emb).index_select(-1, self.inv_perms[k])
        return z

    def to_noise(self, target: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Physical target -> latent noise (the flow's density direction)."""
        z, _ = self._transform((target - self.target_mean) / self.target_std, self.embed(self._context(context)))
        return z

    def from_noise(self, noise: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Latent noise -> physical target, continuous (no rounding of discrete columns)."""
        x = self._inverse(noise, self.embed(self._context(context)))
        return x * self.target_std + self.target_mean

    def log_prob(self, target: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``log p(target | context)`` per row, in physical units (dequantise discrete columns first)."""
        z, logdet = self._transform((target - self.target_mean) / self.target_std, self.embed(self._context(context)))
        log_n = -0.5 * (z * z).sum(dim=-1) - 0.5 * self.n_target * _LOG_2PI
        return log_n + logdet - torch.log(self.target_std).sum()

    def dequantize(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``target`` + U(-1/2, 1/2) noise on the discrete columns (training input for :meth:`log_prob`)."""
        u = torch.rand(target.shape, generator=generator, dtype=target.dtype, device=target.device) - 0.5
        return target + torch.where(self.is_discrete, u, torch.zeros_like(u))

    def forward(self, context: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eff = torch.sigmoid(self.efficiency_logit(context))
        x = self.from_noise(noise, context)
        return eff, torch.where(self.is_discrete, torch.round(x), x)


# ---- specs shared by the flash-sim registrations -----------------------------------------------------------


def flashsim_io(
    context_names: Sequence[str], target_names: Sequence[str], what: str
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    C, D = len(context_names), len(target_names)
    inputs = (
        TensorSpec("context", "float32", ("batch", C), tuple(context_names), f"generator-level {what}, raw units"),
        TensorSpec("noise", "float32", ("batch", D), None, "standard-normal noise, one row per object"),
    )
    outputs = (
        TensorSpec("efficiency", "float32", ("batch",), None, f"probability that the {what} is reconstructed"),
        TensorSpec("sample", "float32", ("batch", D), tuple(target_names), f"reconstructed {what}, physical units"),
    )
    return inputs, outputs


def flashsim_export_spec(
    context_ranges: Mapping[int, tuple[float, float]], n_target: int, atol: float = 1e-4, rtol: float = 1e-4
) -> ExportSpec:
    """ExportSpec whose ``make_inputs(batch, n_elements, seed)`` returns ``{"context", "noise"}`` with
    ``batch`` rows: context column ``i`` uniform in ``context_ranges[i]`` (plausible physical ranges),
    standard-normal noise. ``n_elements`` is ignored (flash-sim tensors have no element axis)."""
    cols = sorted(context_ranges)
    if cols != list(range(len(cols))):
        raise ValueError(f"context_ranges must cover columns 0..C-1 once, got {cols}")
    lo = torch.tensor([context_ranges[i][0] for i in cols], dtype=torch.float32)
    hi = torch.tensor([context_ranges[i][1] for i in cols], dtype=torch.float32)

    def make_inputs(batch: int, n_elements: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(seed))
        u = torch.rand(int(batch), len(cols), generator=g)
        return {"context": lo + u * (hi - lo), "noise": torch.randn(int(batch), n_target, generator=g)}

    return ExportSpec(make_inputs=make_inputs, element_granularity=1, atol=atol, rtol=rtol, opset=None)
