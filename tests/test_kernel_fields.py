"""Field lists of the packed kernel arrays (datasets/kernel_fields.py): packing by name cannot drift."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import pytest

from hepzoo.datasets.detector_config import DEFAULT_CONFIG
from hepzoo.datasets.detector_deposits import DepositFootprint, DepositPar, calorimeters, deposit_tables
from hepzoo.datasets.detector_tracks import TrackKind, TrackPar, track_tables
from hepzoo.datasets.kernel_fields import Fields, from_config, pack
from hepzoo.datasets.pf_config import DEFAULT_PF_CONFIG, LINK_SIZES
from hepzoo.datasets.pf_kernel import PFParam
from hepzoo.datasets.schema import ClusterLayer


class _Three(Fields):
    A = enum.auto()
    B = enum.auto()
    C = enum.auto()


def test_fields_number_themselves_and_pack_by_name():
    assert [int(f) for f in _Three] == [0, 1, 2]
    assert pack(_Three, {"C": 3.0, "A": 1.0, "B": 2.0}).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="missing fields \\['B'\\]"):
        pack(_Three, {"A": 1.0, "C": 3.0})
    with pytest.raises(ValueError, match="unknown fields \\['D'\\]"):
        pack(_Three, {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0})
    with pytest.raises(ValueError, match="unknown fields"):
        from_config(_Three, object(), D=1.0)


def test_detector_vectors_hold_the_config_values_by_name():
    c = dataclasses.replace(DEFAULT_CONFIG, b_field=2.5, hf_footprint=2)
    par = track_tables(c).par
    assert par[TrackPar.B_FIELD] == 2.5
    assert par[TrackPar.TRK_EFF_PT_EDGE_LOW] == c.trk_eff_pt_edges[0]
    assert par[TrackPar.TRK_EFF_PT_EDGE_HIGH] == c.trk_eff_pt_edges[1]
    t = deposit_tables(c)
    for f in DepositPar:
        assert t.par[f] == getattr(c, f.name.lower()), f
    for f in DepositFootprint:
        assert t.footprint[f] == getattr(c, f.name.lower()), f
    assert track_tables(c).eff.shape[0] == len(TrackKind)


def test_calorimeter_table_is_keyed_by_cluster_layer():
    table = calorimeters(DEFAULT_CONFIG)
    assert list(table) == list(ClusterLayer)
    for layer, calo in table.items():
        lo, hi, n_eta, n_phi = DEFAULT_CONFIG.grid(int(layer))
        assert calo.layer == int(layer) and (calo.n_eta, calo.n_phi) == (n_eta, n_phi)
        assert calo.eta_min == lo and calo.deta == (hi - lo) / n_eta
        assert calo.noise.shape == calo.gather.shape == calo.seed.shape == calo.active.shape == (n_eta,)


def test_pf_vector_holds_the_config_values_by_name():
    fields = {f.name for f in dataclasses.fields(DEFAULT_PF_CONFIG)}
    assert {p.name.lower() for p in PFParam} <= fields and set(LINK_SIZES) <= fields
    c = dataclasses.replace(DEFAULT_PF_CONFIG, muon_min_stations=3, combine_tracks_calo=False, hf_em_scale=0.9)
    par = c.params()
    assert par.dtype == np.float64 and par.shape == (len(PFParam),)
    for p in PFParam:
        assert par[p] == float(getattr(c, p.name.lower())), p
    args = c.kernel_args()
    assert args["par"].tolist() == par.tolist() and args["link_k_width"] == c.link_k_width
    assert c.kernel_args() is args  # computed once per instance
