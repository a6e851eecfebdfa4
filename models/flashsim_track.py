"""``flashsim-track``: flash-simulation of reconstructed tracks from charged generator particles.

Context: :class:`hepzoo.datasets.flashsim_data.TrackContext`; sample: ``TrackTarget`` (pT ratio, Δη, Δφ,
d0, z0 - vz); efficiency: probability that a track is reconstructed from the particle. Tables:
:func:`hepzoo.datasets.flashsim_data.track_table`. Flow: :mod:`hepzoo.models.flashsim_common`.
"""

from __future__ import annotations

import math

from hepzoo.datasets import flashsim_data as fd
from hepzoo.models.flashsim_common import FlashSimFlow, flashsim_export_spec, flashsim_io
from hepzoo.models.registry import register_model

TC = fd.TrackContext
# plausible physical ranges of the dummy export inputs, per context column
_CONTEXT_RANGES = {
    TC.LOG_PT: (math.log(fd.TRACK_MIN_PT), math.log(200.0)),
    TC.ETA: (-fd.TRACK_MAX_ABS_ETA, fd.TRACK_MAX_ABS_ETA),
    TC.SIN_PHI: (-1.0, 1.0),
    TC.COS_PHI: (-1.0, 1.0),
    TC.CHARGE: (-1.0, 1.0),
    TC.IS_ELECTRON: (0.0, 1.0),
    TC.IS_MUON: (0.0, 1.0),
    TC.IS_HADRON: (0.0, 1.0),
    TC.VZ: (-100.0, 100.0),
    TC.VR: (0.0, 20.0),
}
_INPUTS, _OUTPUTS = flashsim_io(fd.TRACK_CONTEXT_NAMES, fd.TRACK_TARGET_NAMES, "track")


@register_model(
    "flashsim-track",
    family="flashsim",
    task="track flash-simulation: charged generator particle -> efficiency and (pt ratio, deta, dphi, d0, dz0)",
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    export=flashsim_export_spec({int(k): v for k, v in _CONTEXT_RANGES.items()}, len(fd.TrackTarget)),
    permutation_tolerance=None,
)
def flashsim_track(
    *, n_couplings: int = 6, hidden: int = 64, n_embed: int = 32, scale_clamp: float = 3.0, seed: int = 0
) -> FlashSimFlow:
    """Conditional RealNVP flow + efficiency MLP for charged particles (see ``flashsim_common``)."""
    return FlashSimFlow(
        fd.TRACK_CONTEXT_NAMES,
        fd.TRACK_TARGET_NAMES,
        tuple(int(t) for t in fd.TRACK_DISCRETE_TARGETS),
        n_couplings=n_couplings,
        hidden=hidden,
        n_embed=n_embed,
        scale_clamp=scale_clamp,
        seed=seed,
    )
