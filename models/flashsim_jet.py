"""``flashsim-jet``: flash-simulation of reconstructed (PF) jets from generator jets.

Context: :class:`hepzoo.datasets.flashsim_data.JetContext`; sample: ``JetTarget`` (pT response, Δη, Δφ,
reco mass, reco n_const rounded); efficiency: probability of a reco jet within ΔR < 0.2. Tables:
:func:`hepzoo.datasets.flashsim_data.jet_table`. Flow: :mod:`hepzoo.models.flashsim_common`.
"""

from __future__ import annotations

import math

from hepzoo.datasets import flashsim_data as fd
from hepzoo.models.flashsim_common import FlashSimFlow, flashsim_export_spec, flashsim_io
from hepzoo.models.registry import register_model

JC = fd.JetContext
# plausible physical ranges of the dummy export inputs, per context column
_CONTEXT_RANGES = {
    JC.LOG_PT: (math.log(fd.JET_MIN_PT), math.log(500.0)),
    JC.ETA: (-fd.JET_MAX_ABS_ETA, fd.JET_MAX_ABS_ETA),
    JC.SIN_PHI: (-1.0, 1.0),
    JC.COS_PHI: (-1.0, 1.0),
    JC.MASS: (0.0, 40.0),
    JC.N_CONST: (2.0, 40.0),
    JC.FRAC_CHARGED_HADRON: (0.0, 1.0),
    JC.FRAC_PHOTON: (0.0, 1.0),
    JC.FRAC_NEUTRAL_HADRON: (0.0, 0.5),
    JC.FRAC_LEPTON: (0.0, 0.2),
    JC.N_PILEUP: (0.0, 60.0),
    JC.N_GENJETS: (1.0, 15.0),
}
_INPUTS, _OUTPUTS = flashsim_io(fd.JET_CONTEXT_NAMES, fd.JET_TARGET_NAMES, "jet")


@register_model(
    "flashsim-jet",
    family="flashsim",
    task="jet flash-simulation: generator jet -> reco efficiency and (response, deta, dphi, mass, n_const)",
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    export=flashsim_export_spec({int(k): v for k, v in _CONTEXT_RANGES.items()}, len(fd.JetTarget)),
    permutation_tolerance=None,
)
def flashsim_jet(
    *, n_couplings: int = 6, hidden: int = 64, n_embed: int = 32, scale_clamp: float = 3.0, seed: int = 0
) -> FlashSimFlow:
    """Conditional RealNVP flow + efficiency MLP for generator jets (see ``flashsim_common``)."""
    return FlashSimFlow(
        fd.JET_CONTEXT_NAMES,
        fd.JET_TARGET_NAMES,
        tuple(int(t) for t in fd.JET_DISCRETE_TARGETS),
        n_couplings=n_couplings,
        hidden=hidden,
        n_embed=n_embed,
        scale_clamp=scale_clamp,
        seed=seed,
    )
