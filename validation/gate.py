"""The CI gate: thresholds in the model card, derived from a release measurement, and the comparison with a run.

**The rule.** Each gated metric was measured at release as ``r ± s_r`` (statistical uncertainty: binomial for
rates, bootstrap for medians, IQR/median, W1 ratios and AUCs). A run measures ``m ± s_m`` on its own sample, so
``s_m`` grows as the sample shrinks. With ``s = sqrt(s_r**2 + s_m**2)`` and ``k = n_sigma`` (default 3.5;
a one-sided 3.5 sigma fluctuation has probability 2e-4, so about 30 gated metrics give a released model a
false failure in well under 1 % of independent samples), a metric regresses when

* ``better = "higher"`` (efficiencies):  ``m < r - k s``;
* ``better = "lower"`` (fake rates, resolutions, flash-sim AUC excess and W1 ratio):
  ``m > max(r, floor) + k s`` — ``floor`` is the value a perfect model reaches at any sample size (0 for the
  AUC excess over the noise floor, 1 for W1(flash)/W1(noise floor)), so small samples, where the finite-sample
  W1 of the noise floor dominates, are not held to a ratio that only a large release sample resolves;
* ``better = "closer"`` (responses, target 1; flash-sim efficiency difference, target 0):
  ``|m - target| > |r - target| + k s``.

A metric measured on fewer than ``min_n`` entries in the run is skipped (reported, not gated); a metric that
cannot be measured on enough entries (NaN) fails. :func:`derive_thresholds` builds the card's ``thresholds``
from a release measurement; :func:`check` applies them to a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Check", "Quantity", "Thresholds", "check", "derive_thresholds", "flashsim_quantities", "format_checks",
    "mlpf_quantities", "quantities",
]  # fmt: skip

N_SIGMA = 3.5
MIN_N = 20  # entries below which a run's metric is reported but not gated

RULE = (
    "A metric with release value r +- s_r and run value m +- s_m (statistical; binomial for rates, bootstrap for "
    "medians/IQR/W1/AUC) regresses when, with s = sqrt(s_r^2 + s_m^2) and k = n_sigma: higher-is-better m < r - k s; "
    "lower-is-better m > max(r, floor) + k s (floor 0 for the flash-sim AUC excess over the noise floor, 1 for "
    "W1(flash)/W1(noise floor)); closer-to-target |m - target| > |r - target| + k s. Metrics with fewer than "
    "min_n entries in the run are not gated."
)

Better = Literal["higher", "lower", "closer"]


@dataclass(frozen=True)
class Quantity:
    """One gated scalar of a measurement."""

    value: float
    unc: float
    n: int
    better: Better
    target: float | None = None  # for "closer"
    floor: float | None = None  # for "lower": the value a perfect model reaches


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)


def mlpf_quantities(result: Mapping[str, Any]) -> dict[str, Quantity]:
    """The gated scalars of an MLPF measurement: the model's side (the PF baseline is reported only)."""
    rec = result["mlpf"]
    out: dict[str, Quantity] = {}
    for cls, p in rec["particles"].items():
        out[f"particles.{cls}.efficiency"] = Quantity(_f(p["efficiency"]), _f(p["efficiency_unc"]), p["n_truth"], "higher")
        out[f"particles.{cls}.fake_rate"] = Quantity(_f(p["fake_rate"]), _f(p["fake_rate_unc"]), p["n_reco"], "lower")
        r = p["pt_response"]
        out[f"particles.{cls}.pt_response.median"] = Quantity(_f(r["median"]), _f(r["median_unc"]), r["n"], "closer", 1.0)
        out[f"particles.{cls}.pt_response.iqr_over_median"] = Quantity(
            _f(r["iqr_over_median"]), _f(r["iqr_over_median_unc"]), r["n"], "lower"
        )
    j = rec["jets"]
    out["jets.matching_efficiency"] = Quantity(_f(j["matching_efficiency"]), _f(j["matching_efficiency_unc"]), j["n_gen"], "higher")
    for name in ("jets", "met"):
        inc = rec[name]["inclusive"]
        out[f"{name}.response.median"] = Quantity(_f(inc["median"]), _f(inc["median_unc"]), inc["n"], "closer", 1.0)
        out[f"{name}.response.iqr_over_median"] = Quantity(
            _f(inc["iqr_over_median"]), _f(inc["iqr_over_median_unc"]), inc["n"], "lower"
        )
    return out


def flashsim_quantities(rep: Mapping[str, Any]) -> dict[str, Quantity]:
    """The gated scalars of a flash-sim fidelity measurement."""
    n_flash = rep["n"]["flash"]["matched"]
    auc = rep["auc"]
    out = {"auc.excess": Quantity(_f(auc["excess"]), _f(auc["excess_unc"]), n_flash, "lower", floor=0.0)}
    for name, v in rep["variables"].items():
        w1 = v["w1"]
        out[f"variables.{name}.w1_ratio"] = Quantity(_f(w1["ratio"]), _f(w1["ratio_unc"]), n_flash, "lower", floor=1.0)
    eff = rep["efficiency_inclusive"]
    out["efficiency.difference"] = Quantity(
        _f(eff["difference"]), _f(eff["difference_unc"]), rep["n"]["full"]["rows"], "closer", 0.0
    )
    return out


def quantities(metrics: Mapping[str, Any]) -> dict[str, Quantity]:
    """The gated scalars of a ``hepzoo validate`` measurement (``metrics.json``), by name: the family's
    ``quantities`` hook (:mod:`hepzoo.validation.families`) on its part of the metrics."""
    from hepzoo.models.families import get_family

    family = get_family(metrics.get("family"))  # an unknown family is a ValueError listing the registered ones
    return family.validation.quantities(metrics[family.name])


# ---- thresholds (the card's ``thresholds`` field) -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    reference: float  # release value r
    uncertainty: float = Field(ge=0)  # its statistical uncertainty s_r
    n: int = Field(ge=0)  # entries at release
    better: Better
    target: float | None = None
    floor: float | None = None


class Thresholds(_Strict):
    """The ``thresholds`` field of a model card (see the module docstring for the rule)."""

    rule: str = RULE
    n_sigma: float = Field(N_SIGMA, gt=0)
    min_n: int = Field(MIN_N, ge=1)
    measured_on: dict[str, Any]  # files (with sha256), events, backend, seed, hepzoo command
    metrics: dict[str, Threshold] = Field(min_length=1)

    @classmethod
    def from_card(cls, card: Any) -> Thresholds:
        """The thresholds of a :class:`~hepzoo.export.card.ModelCard`; a clear error when it has none."""
        if not card.thresholds:
            raise ValueError(
                f"model card of {card.name} {card.version} has no thresholds: derive them from a release measurement "
                f"with `hepzoo zoo set-thresholds {card.name} --data ...`"
            )
        try:
            return cls.model_validate(card.thresholds)
        except ValueError as error:
            raise ValueError(f"model card of {card.name} {card.version}: invalid thresholds: {error}") from error


def derive_thresholds(
    metrics: Mapping[str, Any], measured_on: Mapping[str, Any], n_sigma: float = N_SIGMA, min_n: int = MIN_N
) -> Thresholds:
    """Thresholds from a release measurement: every gated quantity that is finite, with its uncertainty."""
    entries = {}
    for name, q in quantities(metrics).items():
        if math.isfinite(q.value) and math.isfinite(q.unc) and q.n >= min_n:
            entries[name] = Threshold(reference=q.value, uncertainty=q.unc, n=q.n, better=q.better, target=q.target, floor=q.floor)
    if not entries:
        raise ValueError("the release measurement has no finite metric with enough entries to set a threshold on")
    return Thresholds(n_sigma=n_sigma, min_n=min_n, measured_on=dict(measured_on), metrics=entries)


# ---- comparison ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One gated metric of a run: ``status`` is ``pass``, ``fail`` or ``skipped``."""

    metric: str
    status: Literal["pass", "fail", "skipped"]
    measured: float
    measured_unc: float
    n: int
    reference: float
    reference_unc: float
    limit: float  # the bound on the value (higher/lower) or on |value - target| (closer)
    better: Better
    target: float | None
    reason: str

    @property
    def condition(self) -> str:
        """The pass condition, e.g. ``>= 0.781`` or ``|x - 1| <= 0.052``."""
        if self.better == "higher":
            return f">= {self.limit:.4g}"
        if self.better == "lower":
            return f"<= {self.limit:.4g}"
        return f"|x - {self.target:g}| <= {self.limit:.4g}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "condition": self.condition}


def _check_one(name: str, t: Threshold, q: Quantity | None, k: float, min_n: int) -> Check:
    def make(status: str, m: float, s_m: float, n: int, limit: float, reason: str) -> Check:
        return Check(name, status, m, s_m, n, t.reference, t.uncertainty, limit, t.better, t.target, reason)  # type: ignore[arg-type]

    if q is None:
        return make("fail", math.nan, math.nan, 0, math.nan, "metric missing from the measurement")
    s_m = q.unc if math.isfinite(q.unc) else 0.0
    sigma = math.hypot(t.uncertainty, s_m)
    if t.better == "higher":
        limit = t.reference - k * sigma
    elif t.better == "lower":
        limit = max(t.reference, t.floor if t.floor is not None else -math.inf) + k * sigma
    else:
        limit = abs(t.reference - (t.target or 0.0)) + k * sigma
    if q.n < min_n:
        return make("skipped", q.value, q.unc, q.n, limit, f"{q.n} entries < min_n {min_n}")
    if not math.isfinite(q.value):
        return make("fail", q.value, q.unc, q.n, limit, "not measurable on this sample")
    if not math.isfinite(q.unc):
        return make("fail", q.value, q.unc, q.n, limit, "no statistical uncertainty could be estimated")
    if t.better == "higher":
        ok = q.value >= limit
    elif t.better == "lower":
        ok = q.value <= limit
    else:
        ok = abs(q.value - (t.target or 0.0)) <= limit
    return make("pass" if ok else "fail", q.value, q.unc, q.n, limit, "" if ok else "regressed")


def check(metrics: Mapping[str, Any], thresholds: Thresholds) -> list[Check]:
    """Compare a run's measurement with the card's thresholds, one :class:`Check` per threshold."""
    measured = quantities(metrics)
    return [
        _check_one(name, t, measured.get(name), thresholds.n_sigma, thresholds.min_n)
        for name, t in thresholds.metrics.items()
    ]


def format_checks(checks: list[Check], only_failed: bool = False) -> str:
    """One line per check: metric, measured ± unc (entries), pass condition, release value, status."""
    lines = []
    for c in checks:
        if only_failed and c.status != "fail":
            continue
        lines.append(
            f"{c.status.upper():7s} {c.metric:44s} measured {c.measured:.4g} ± {c.measured_unc:.2g} (n={c.n})  "
            f"threshold {c.condition}  (release {c.reference:.4g} ± {c.reference_unc:.2g})"
            + (f"  [{c.reason}]" if c.reason and c.status != "pass" else "")
        )
    return "\n".join(lines)
