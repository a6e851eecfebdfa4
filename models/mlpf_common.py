"""Shared pieces of the MLPF models: the interface, input transform, output heads, specs and dummy inputs.

Interface of every MLPF model (element-aligned: one output slot per input element)::

    cls_logits, charge_logits, regression = model(features, mask)

* ``features`` float32 ``[B, N, len(ElementFeature)]`` (columns in ``schema.ElementFeature`` order),
  ``mask`` bool ``[B, N]`` (True = real element, False = padding);
* ``cls_logits`` ``[B, N, len(TargetClass)]``;
* ``charge_logits`` ``[B, N, 3]``, classes :data:`CHARGE_CLASSES` = (-1, 0, +1) (index = charge + 1);
* ``regression`` ``[B, N, 5]``: PHYSICAL, decoded values in the order :data:`REGRESSION_FEATURES`
  (``TargetFeature`` without ``CHARGE``: pt, eta, sin_phi, cos_phi, e). So
  ``target_reg[..., REGRESSION_TARGET_INDEX]`` of a loader batch lines up with ``regression``.

Decoding (MLPF style, relative to the element's own kinematics; see :class:`MLPFHeads`), with
``pt0 = max(ElementFeature.PT, PT_MIN)``, ``e0 = max(ElementFeature.E, E_MIN)`` and the head's raw outputs r:

    pt = pt0 * exp(clamp(r_pt, -RAW_LOG_CLAMP, RAW_LOG_CLAMP))
    e  = e0  * exp(clamp(r_e,  -RAW_LOG_CLAMP, RAW_LOG_CLAMP))
    eta = elem_eta + r_eta
    sin_phi = elem_sin_phi + r_sin ; cos_phi = elem_cos_phi + r_cos      (not normalised: phi = atan2(sin, cos))

The last layer of the regression head starts at zero, so an untrained model predicts the element's own
kinematics. Padded positions: their features are replaced by zeros before anything else, so their outputs
are finite whatever the padding holds, and each model keeps them from influencing real positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hepzoo.datasets import schema
from hepzoo.models.mlpf_decode import (  # noqa: F401  (the output layout lives with its torch-free decoder)
    CHARGE_CLASSES,
    REGRESSION_COLUMN,
    REGRESSION_FEATURE_NAMES,
    REGRESSION_FEATURES,
    REGRESSION_TARGET_INDEX,
)
from hepzoo.models.registry import ExportSpec, TensorSpec

EF = schema.ElementFeature
TF = schema.TargetFeature
ET = schema.ElementType

N_FEATURES = len(EF)
N_CLASSES = len(schema.TargetClass)
ELEMENT_TYPES: tuple[schema.ElementType, ...] = tuple(ET)

PT_MIN = 1e-3  # GeV, floor of the element pT used as the decoding reference
E_MIN = 1e-3  # GeV
RAW_LOG_CLAMP = 10.0

# ---- input transform ---------------------------------------------------------------------------------
# One fixed elementwise transform per ElementFeature (TYPE is one-hot encoded instead). Every feature must
# appear exactly once (checked at import).
_LOG1P = (EF.PT, EF.E, EF.PT_ERR, EF.E_ECAL, EF.E_HCAL, EF.N_CELLS)  # log1p(max(x, 0))
_ASINH = (EF.D0, EF.Z0)  # asinh(x / 1 mm): linear near 0, logarithmic in the tails
_IDENTITY = (EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.CHARGE, EF.ETA_CALO, EF.SIN_PHI_CALO, EF.COS_PHI_CALO)
_SCALE = {EF.N_HITS: 1 / 10.0, EF.MUON_STATIONS: 1 / 4.0, EF.SIGMA_ETA: 10.0, EF.SIGMA_PHI: 10.0}
_ONE_HOT = (EF.TYPE,)

_covered = sorted(int(f) for f in (*_LOG1P, *_ASINH, *_IDENTITY, *_SCALE, *_ONE_HOT))
if _covered != list(range(N_FEATURES)):
    raise RuntimeError(f"mlpf_common: the input transform does not cover each ElementFeature once: {_covered}")


class InputTransform(nn.Module):
    """``[B, N, len(ElementFeature)]`` raw features -> ``[B, N, out_features]`` network inputs.

    Output columns: the transformed non-TYPE features in ElementFeature order, then the one-hot of
    ElementType in ``ELEMENT_TYPES`` order. Padded rows (``mask`` False) are zeroed first. Elementwise
    ops only (Log1p via Log, Asinh, Where, Mul, Equal) so it exports to ONNX unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        keep = [int(f) for f in EF if f not in _ONE_HOT]
        is_log = torch.zeros(N_FEATURES, dtype=torch.bool)
        is_asinh = torch.zeros(N_FEATURES, dtype=torch.bool)
        scale = torch.ones(N_FEATURES)
        for f in _LOG1P:
            is_log[f] = True
        for f in _ASINH:
            is_asinh[f] = True
        for f, s in _SCALE.items():
            scale[f] = s
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)
        self.register_buffer("is_log", is_log[keep], persistent=False)
        self.register_buffer("is_asinh", is_asinh[keep], persistent=False)
        self.register_buffer("scale", scale[keep], persistent=False)
        self.register_buffer("types", torch.tensor([float(t) for t in ELEMENT_TYPES]), persistent=False)
        self.out_features = len(keep) + len(ELEMENT_TYPES)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.where(mask.unsqueeze(-1), features, torch.zeros_like(features))
        v = x.index_select(-1, self.keep)
        v = torch.where(self.is_log, torch.log1p(torch.clamp(v, min=0.0)), v)
        v = torch.where(self.is_asinh, torch.asinh(v), v)
        v = v * self.scale
        onehot = (x[..., int(EF.TYPE)].unsqueeze(-1) == self.types).to(v.dtype)
        return torch.cat([v, onehot], dim=-1)


def masked_features(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Features with padded rows set to zero (the decoding reference of padded slots is then PT_MIN/E_MIN)."""
    return torch.where(mask.unsqueeze(-1), features, torch.zeros_like(features))


def stable_argsort(keys: torch.Tensor, dim: int) -> torch.Tensor:
    """``argsort`` with equal keys in index order, as ONNX TopK orders them: eager and every exported backend then
    agree on ties (the exporter has no stable sort; outside export torch's default sort is not stable)."""
    if torch.onnx.is_in_onnx_export():
        return torch.argsort(keys, dim=dim)  # exported as TopK, stable by its specification
    return torch.argsort(keys, dim=dim, stable=True)


def mlp(n_in: int, n_hidden: int, n_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(n_hidden, n_out)
    )


class MLPFHeads(nn.Module):
    """The output heads shared by all MLPF models.

    Input: the last embedding ``h [B,N,width]``, the transformed inputs ``x_enc`` and the raw
    ``features`` (padded rows already zeroed). Classification and charge heads read ``[h, x_enc]``; the
    regression head also reads the class probabilities. Regression is decoded relative to the element (see
    the module docstring).

    Decoding options (release 3 and later, measured in ``docs/mlpf-physics.md``):

    * ``measured_tracks``: a track slot outputs its track's own measurement (pT, eta, phi, p) unchanged. A
      track slot's target also holds the soft, unmeasured particles merged into it, which no input predicts;
      regressing them moved track slots off their track (worse particle matching, no better jets).
    * ``massless_clusters``: a cluster slot outputs E = pT cosh(eta) from its own regressed pT and eta instead of
      the separately regressed energy. The pT and E heads are trained apart, so a candidate could carry a mass
      that no neutral particle has; anti-kt clusters in rapidity, and massive candidates moved jets off their
      generator jets (worse matching, most of all after a fine-tune with the jet-level loss, which sees pT
      only). A decoding setting: the energy terms of the loss would not train the E head with it on, so
      training leaves it off.
    * ``class_logit_bias``: a fixed per-class offset (``TargetClass`` order) added to ``cls_logits``, i.e. the
      working point of the argmax decision. Chosen after training on a calibration sample
      (:mod:`hepzoo.validation.working_point`); training leaves it at zero. The regression head reads the
      unbiased class probabilities it was trained with.
    """

    def __init__(
        self,
        width: int,
        n_enc: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        measured_tracks: bool = False,
        class_logit_bias: Sequence[float] | None = None,
        massless_clusters: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden or width
        self.cls = mlp(width + n_enc, hidden, N_CLASSES, dropout)
        self.charge = mlp(width + n_enc, hidden, len(CHARGE_CLASSES), dropout)
        self.reg = mlp(width + n_enc + N_CLASSES, hidden, len(REGRESSION_FEATURES), dropout)
        nn.init.zeros_(self.reg[-1].weight)
        nn.init.zeros_(self.reg[-1].bias)
        self.measured_tracks = bool(measured_tracks)
        self.massless_clusters = bool(massless_clusters)
        bias = [0.0] * N_CLASSES if class_logit_bias is None else [float(b) for b in class_logit_bias]
        if len(bias) != N_CLASSES or not all(math.isfinite(b) for b in bias):
            raise ValueError(
                f"class_logit_bias needs {N_CLASSES} finite values (TargetClass order "
                f"{[c.name for c in schema.TargetClass]}), got {class_logit_bias!r}"
            )
        # not in the state dict: a decoding setting of the config, so weights load with or without it
        self.register_buffer("class_logit_bias", torch.tensor(bias, dtype=torch.float32), persistent=False)

    def forward(
        self, h: torch.Tensor, x_enc: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.cat([h, x_enc], dim=-1)
        cls_logits = self.cls(z)
        charge_logits = self.charge(z)
        raw = self.reg(torch.cat([z, torch.softmax(cls_logits, dim=-1)], dim=-1))
        regression = decode_regression(raw, features)
        if self.massless_clusters or self.measured_tracks:
            is_track = (features[..., int(EF.TYPE)] == float(ET.TRACK)).unsqueeze(-1)
            if self.massless_clusters:
                regression = torch.where(is_track, regression, massless_kinematics(regression))
            if self.measured_tracks:
                regression = torch.where(is_track, element_kinematics(features), regression)
        return cls_logits + self.class_logit_bias, charge_logits, regression


#: keyword arguments of the MLPF models that change the decoding only (no weights): set after training, e.g. by
#: ``hepzoo zoo release --decoding massless_clusters=true``
DECODING_OPTIONS = ("measured_tracks", "massless_clusters")


def parse_decoding(items: Sequence[str]) -> dict[str, bool]:
    """``["massless_clusters=true", ...]`` -> ``{"massless_clusters": True}``; unknown names or values raise."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DECODING_OPTIONS or value.lower() not in ("true", "false"):
            raise ValueError(
                f"decoding option {item!r}: expected NAME=true|false with NAME one of {', '.join(DECODING_OPTIONS)}"
            )
        out[key] = value.lower() == "true"
    return out


def element_kinematics(features: torch.Tensor) -> torch.Tensor:
    """The elements' own measurement ``[..., 5]`` in REGRESSION_FEATURES order (track pT/p, cluster ET/E)."""
    cols = {
        TF.PT: features[..., int(EF.PT)],
        TF.ETA: features[..., int(EF.ETA)],
        TF.SIN_PHI: features[..., int(EF.SIN_PHI)],
        TF.COS_PHI: features[..., int(EF.COS_PHI)],
        TF.E: features[..., int(EF.E)],
    }
    return torch.stack([cols[f] for f in REGRESSION_FEATURES], dim=-1)


def massless_kinematics(regression: torch.Tensor) -> torch.Tensor:
    """``regression [..., 5]`` (REGRESSION_FEATURES order) with E replaced by pT cosh(eta)."""
    c = REGRESSION_COLUMN
    eta = regression[..., c[TF.ETA]]
    cosh = 0.5 * (torch.exp(eta) + torch.exp(-eta))  # Exp, not Cosh: every backend executes Exp
    e = regression[..., c[TF.PT]] * cosh
    return torch.cat([regression[..., : c[TF.E]], e.unsqueeze(-1), regression[..., c[TF.E] + 1 :]], dim=-1)


def decode_regression(raw: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Raw head outputs ``[..., 5]`` (REGRESSION_FEATURES order) -> physical values, relative to the element."""
    pt0 = torch.clamp(features[..., int(EF.PT)], min=PT_MIN)
    e0 = torch.clamp(features[..., int(EF.E)], min=E_MIN)
    r = torch.clamp(raw, -RAW_LOG_CLAMP, RAW_LOG_CLAMP)
    c = REGRESSION_COLUMN
    cols = {
        TF.PT: pt0 * torch.exp(r[..., c[TF.PT]]),
        TF.ETA: features[..., int(EF.ETA)] + raw[..., c[TF.ETA]],
        TF.SIN_PHI: features[..., int(EF.SIN_PHI)] + raw[..., c[TF.SIN_PHI]],
        TF.COS_PHI: features[..., int(EF.COS_PHI)] + raw[..., c[TF.COS_PHI]],
        TF.E: e0 * torch.exp(r[..., c[TF.E]]),
    }
    return torch.stack([cols[f] for f in REGRESSION_FEATURES], dim=-1)


# ---- specs shared by the MLPF registrations ------------------------------------------------------------

MLPF_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        "features",
        "float32",
        ("batch", "elements", N_FEATURES),
        schema.ELEMENT_FEATURE_NAMES,
        "element features (tracks, then clusters), schema.ElementFeature order, raw physical units",
    ),
    TensorSpec("mask", "bool", ("batch", "elements"), None, "True for real elements, False for padding"),
)

MLPF_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(
        "cls_logits",
        "float32",
        ("batch", "elements", N_CLASSES),
        tuple(c.name.lower() for c in schema.TargetClass),
        "TargetClass logits per element slot",
    ),
    TensorSpec(
        "charge_logits",
        "float32",
        ("batch", "elements", len(CHARGE_CLASSES)),
        tuple(f"charge_{q:+d}" if q else "charge_0" for q in CHARGE_CLASSES),
        "charge logits, classes -1, 0, +1",
    ),
    TensorSpec(
        "regression",
        "float32",
        ("batch", "elements", len(REGRESSION_FEATURES)),
        REGRESSION_FEATURE_NAMES,
        "decoded physical pt [GeV], eta, sin_phi, cos_phi, e [GeV]",
    ),
)


def make_mlpf_inputs(batch: int, n_elements: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible random MLPF inputs ``{"features", "mask"}``: each event has between 1 and ``n_elements``
    real elements (tracks first, then clusters), physical ranges roughly like the detector's; padding is 0."""
    g = torch.Generator().manual_seed(int(seed))
    B, N = int(batch), int(n_elements)
    n_real = torch.randint(max(1, N // 2), N + 1, (B,), generator=g)
    n_real[0] = N  # one full event
    mask = torch.arange(N).unsqueeze(0) < n_real.unsqueeze(1)
    x = torch.zeros(B, N, N_FEATURES)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    n = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    etype = torch.randint(1, len(ELEMENT_TYPES) + 1, (B, N), generator=g).float()
    is_trk = etype == float(ET.TRACK)
    pt = torch.exp(n(B, N) * 1.0 + 0.5)
    eta = (u(B, N) * 2 - 1) * 3.0
    phi = (u(B, N) * 2 - 1) * math.pi
    x[..., EF.TYPE] = etype
    x[..., EF.PT] = pt
    x[..., EF.ETA] = eta
    x[..., EF.SIN_PHI] = torch.sin(phi)
    x[..., EF.COS_PHI] = torch.cos(phi)
    x[..., EF.E] = pt * torch.cosh(eta)
    t = is_trk.float()
    c = 1.0 - t
    x[..., EF.CHARGE] = t * torch.where(u(B, N) < 0.5, -1.0, 1.0)
    dphi = n(B, N) * 0.05
    x[..., EF.ETA_CALO] = t * (eta + n(B, N) * 0.01)
    x[..., EF.SIN_PHI_CALO] = t * torch.sin(phi + dphi)
    x[..., EF.COS_PHI_CALO] = t * torch.cos(phi + dphi)
    x[..., EF.PT_ERR] = t * pt * pt * 1e-4
    x[..., EF.D0] = t * n(B, N) * 0.05
    x[..., EF.Z0] = t * n(B, N) * 5.0
    x[..., EF.N_HITS] = t * torch.randint(8, 20, (B, N), generator=g).float()
    x[..., EF.MUON_STATIONS] = t * (u(B, N) < 0.05).float() * 3
    frac = u(B, N)
    x[..., EF.E_ECAL] = c * x[..., EF.E] * frac
    x[..., EF.E_HCAL] = c * x[..., EF.E] * (1 - frac)
    x[..., EF.SIGMA_ETA] = c * u(B, N) * 0.05
    x[..., EF.SIGMA_PHI] = c * u(B, N) * 0.05
    x[..., EF.N_CELLS] = c * torch.randint(1, 30, (B, N), generator=g).float()
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
    return {"features": x, "mask": mask}


def mlpf_export_spec(element_granularity: int = 1, atol: float = 1e-4, rtol: float = 1e-4) -> ExportSpec:
    return ExportSpec(
        make_inputs=make_mlpf_inputs, element_granularity=element_granularity, atol=atol, rtol=rtol, opset=None
    )
