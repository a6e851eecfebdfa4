"""A tiny stand-in model for training tests. Configs name it by import path (``model.name:
'tiny_models:tiny_mlpf'``), so it lives in an importable helper module (tests/ is on sys.path; test_ddp puts it
on the PYTHONPATH of its torchrun workers), not in a test module."""

from __future__ import annotations

import torch
from torch import nn

from hepzoo.datasets import schema

EF = schema.ElementFeature
N_CLS = len(schema.TargetClass)


class TinyMLPF(nn.Module):
    """Stand-in with the hepzoo.models MLPF interface: (features, mask) -> (cls, charge, physical regression)."""

    def __init__(self, width: int = 16, dropout: float = 0.0):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Linear(len(EF), width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU()
        )
        self.cls = nn.Linear(2 * width, N_CLS)
        self.charge = nn.Linear(2 * width, 3)
        self.reg = nn.Linear(2 * width, 5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        m = mask.unsqueeze(-1).to(x.dtype)
        h = self.enc(x) * m
        ctx = h.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        h = torch.cat([h, ctx.expand_as(h)], dim=-1)
        r = self.reg(h)
        pt = x[..., EF.PT].clamp(min=1e-3) * torch.exp(r[..., 0].clamp(-5, 5))
        e = x[..., EF.E].clamp(min=1e-3) * torch.exp(r[..., 4].clamp(-5, 5))
        reg = torch.stack(
            [pt, x[..., EF.ETA] + r[..., 1], x[..., EF.SIN_PHI] + r[..., 2], x[..., EF.COS_PHI] + r[..., 3], e], -1
        )
        return self.cls(h), self.charge(h), reg


def tiny_mlpf(**kw) -> TinyMLPF:
    """Factory for ``model.name: 'tiny_models:tiny_mlpf'``."""
    return TinyMLPF(**kw)
