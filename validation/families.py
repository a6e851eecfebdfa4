"""How each model family is validated: the hooks that ``hepzoo validate``, the CI gate, the report and
``hepzoo zoo release`` call. Each :class:`~hepzoo.models.families.Family` names its hooks
(``Family.validation``, a lazy reference to one of the objects below); every hook is itself a lazy reference, so
importing this module imports no metric code (and no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from hepzoo.models.families import Ref

__all__ = ["FLASHSIM_VALIDATION", "FamilyValidation", "MLPF_VALIDATION"]


@dataclass(frozen=True)
class FamilyValidation:
    """The validation hooks of one family. ``result`` is the family's part of ``metrics.json``
    (``metrics[family]``, what ``measure`` returns)."""

    measure: Ref  # (session, events, seed=) -> (result, arrays): the deployed artifact on events (hepzoo validate)
    quantities: Ref  # result -> {name: Quantity}: the gated scalars (hepzoo.validation.gate)
    plots: Ref  # (result, arrays, out, rlabel, limits) -> {key: file name}: the report's figures
    sections: Ref  # (metrics, images) -> [Section]: the report's physics tables (after the gate's)
    release_metrics: Ref  # (model, config, events, *, noise_floor, max_events, seed) -> metrics (hepzoo zoo release)
    format_release: Ref  # metrics -> text printed by hepzoo zoo release


MLPF_VALIDATION = FamilyValidation(
    measure=Ref("hepzoo.validation.mlpf:compare_runtime_with_baseline"),
    quantities=Ref("hepzoo.validation.gate:mlpf_quantities"),
    plots=Ref("hepzoo.validation.report:mlpf_plots"),
    sections=Ref("hepzoo.validation.report:mlpf_sections"),
    release_metrics=Ref("hepzoo.validation.mlpf:release_metrics"),
    format_release=Ref("hepzoo.validation.mlpf:format_comparison"),
)

FLASHSIM_VALIDATION = FamilyValidation(
    measure=Ref("hepzoo.validation.flashsim:evaluate_runtime"),
    quantities=Ref("hepzoo.validation.gate:flashsim_quantities"),
    plots=Ref("hepzoo.validation.report:flashsim_plots"),
    sections=Ref("hepzoo.validation.report:flashsim_sections"),
    release_metrics=Ref("hepzoo.validation.flashsim:release_metrics"),
    format_release=Ref("hepzoo.validation.flashsim:format_report"),
)
