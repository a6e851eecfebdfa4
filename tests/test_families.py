"""Model families and flash-sim object kinds (``hepzoo.models.families``): values, lookups and their errors, the
one MLPF decoder, the object kinds' data side, and the lazy references every layer dispatches through."""

from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from hepzoo.datasets import flashsim_data as fd
from hepzoo.datasets.schema import TargetClass as TC
from hepzoo.datasets.schema import TargetFeature as TF
from hepzoo.models import get_spec, list_models, register_model
from hepzoo.models.families import (
    FLASHSIM,
    MLPF,
    Family,
    Ref,
    UnknownFamilyError,
    UnknownKindError,
    families,
    family_names,
    get_family,
    kind_names,
)
from hepzoo.models.mlpf_decode import CHARGE_CLASSES, REGRESSION_COLUMN, REGRESSION_FEATURES, decode_candidates


def test_registered_families_and_kinds():
    assert families()[:2] == (MLPF, FLASHSIM) and family_names()[:2] == ("mlpf", "flashsim")
    assert kind_names()[:2] == ("jet", "track") and kind_names() == tuple(FLASHSIM.kinds)
    assert (MLPF.elements, MLPF.generative, dict(MLPF.kinds)) == (True, False, {})
    assert (MLPF.input_collections, MLPF.input_scalars, MLPF.output_collection) == (("trk", "clu"), (), "mlpf")
    assert MLPF.noise_inputs == () and MLPF.label == "MLPF"
    assert (FLASHSIM.elements, FLASHSIM.generative, FLASHSIM.noise_inputs) == (False, True, ("noise",))
    assert FLASHSIM.output_collection is None and FLASHSIM.label == "flash-sim"
    jet, track = FLASHSIM.kinds["jet"], FLASHSIM.kinds["track"]
    assert (jet.output_collection, jet.input_collections, jet.input_scalars) == ("flashjet", ("gen", "genjet"), ("n_pileup",))
    assert (track.output_collection, track.input_collections, track.input_scalars) == ("flashtrk", ("gen",), ())
    assert (jet.demo_response, track.demo_response) == ("pt_response", None)
    assert jet.context_names == fd.JET_CONTEXT_NAMES and track.target_names == fd.TRACK_TARGET_NAMES


def test_a_family_is_its_name():
    assert MLPF == "mlpf" and hash(FLASHSIM) == hash("flashsim") and repr(MLPF) == "'mlpf'"
    assert {"mlpf": 1}[MLPF] == 1 and MLPF.name == "mlpf" and type(MLPF.name) is str
    assert json.dumps({"family": FLASHSIM}) == '{"family": "flashsim"}'
    assert pickle.loads(pickle.dumps(FLASHSIM)) is FLASHSIM
    assert get_family("mlpf") is MLPF and get_family(MLPF) is MLPF
    with pytest.raises(AttributeError, match="read-only"):
        MLPF.generative = True
    for name in list_models():
        spec = get_spec(name)
        assert isinstance(spec.family, Family) and spec.family is get_family(spec.family.name)
        assert spec.to_dict()["family"] == spec.family.name


def test_unknown_family_and_kind_list_the_registered_ones():
    registered = ", ".join(family_names())  # "mlpf, flashsim"
    with pytest.raises(UnknownFamilyError, match=rf"unknown model family 'gan'; registered families: {registered}$"):
        get_family("gan")
    assert issubclass(UnknownFamilyError, ValueError) and registered.startswith("mlpf, flashsim")
    with pytest.raises(ValueError, match=rf"model 'test-gan': unknown model family 'gan'; registered families: {registered}$"):
        register_model("test-gan", family="gan", task="", inputs=(), outputs=(), export=None)
    assert "test-gan" not in list_models()
    kinds = ", ".join(FLASHSIM.kinds)  # "jet, track"
    with pytest.raises(UnknownKindError, match=rf"flash-sim has no object kind 'calo'; kinds: {kinds}$"):
        FLASHSIM.object_kind("calo")
    with pytest.raises(UnknownKindError, match=r"MLPF has no object kind 'jet'; kinds: \(none\)"):
        MLPF.object_kind("jet")


def test_objects_of_a_config():
    assert MLPF.objects({"model": {"name": "mlpf-gnnlsh"}}) is MLPF
    assert FLASHSIM.objects({"data": {"kind": "track"}}) is FLASHSIM.kinds["track"]
    with pytest.raises(UnknownKindError, match="flash-sim has no object kind None; kinds: jet, track"):
        FLASHSIM.objects({"data": {}})


def _known_outputs():
    """Two events: a charged hadron (+) and a photon, then an empty slot; regression columns set by name."""
    n_classes = len(TC)
    cls_logits = np.full((3, n_classes), -5.0, np.float32)
    for row, c in enumerate((TC.CHARGED_HADRON, TC.PHOTON, TC.NONE)):
        cls_logits[row, int(c)] = 5.0
    charge_logits = np.zeros((3, len(CHARGE_CLASSES)), np.float32)
    charge_logits[:, CHARGE_CLASSES.index(1)] = 2.0  # the head says +1 everywhere (the photon must stay 0)
    reg = np.zeros((3, len(REGRESSION_FEATURES)), np.float32)
    for row, (pt, eta, sin_phi, cos_phi, e) in enumerate([(10.0, 0.5, 0.6, 0.8, 12.0), (3.0, -1.0, -1.0, 0.0, 4.5),
                                                          (1.0, 0.0, 0.0, 1.0, 1.0)]):  # fmt: skip
        for f, v in ((TF.PT, pt), (TF.ETA, eta), (TF.SIN_PHI, sin_phi), (TF.COS_PHI, cos_phi), (TF.E, e)):
            reg[row, REGRESSION_COLUMN[f]] = v
    return {"cls_logits": cls_logits, "charge_logits": charge_logits, "regression": reg}, np.array([0, 1, 3])


def test_mlpf_decoder_maps_known_rows_to_known_candidates():
    assert REGRESSION_FEATURES == (TF.PT, TF.ETA, TF.SIN_PHI, TF.COS_PHI, TF.E)
    assert MLPF.decode.resolve() is decode_candidates
    out, offsets = _known_outputs()
    cands = MLPF.decode(out, offsets)
    assert cands.fields == ["cls", "charge", "pt", "eta", "phi", "e"]
    assert cands.cls.tolist() == [[int(TC.CHARGED_HADRON)], [int(TC.PHOTON)]]  # the NONE slot is dropped
    assert cands.charge.tolist() == [[1], [0]]
    assert cands.pt.tolist() == [[10.0], [3.0]] and cands.e.tolist() == [[12.0], [4.5]]
    assert cands.eta.tolist() == [[0.5], [-1.0]]
    np.testing.assert_allclose([p[0] for p in cands.phi.tolist()], [math.atan2(0.6, 0.8), -math.pi / 2], rtol=1e-6)
    full = MLPF.decode(out, offsets, probabilities=True, keep_empty=True)
    assert [len(e) for e in full.cls.tolist()] == [1, 2] and full.charge.tolist() == [[1], [0, 0]]
    np.testing.assert_allclose(np.asarray(full.cls_prob[1][1]).sum(), 1.0, rtol=1e-6)
    # the runtime's Session.candidates and the torch-side validation use this same decoder
    from hepzoo.runtime.session import Session

    assert Session.candidates(out, offsets).tolist() == cands.tolist()


def test_object_kind_encodes_and_decodes_with_its_tables():
    assert set(FLASHSIM.kinds) == set(fd.KINDS)  # the data side has a record for every kind, and only those
    jet = FLASHSIM.kinds["jet"]
    assert jet.tables is fd.KINDS["jet"] and fd.KINDS["jet"][0] is fd.jet_table
    context = np.zeros((1, len(fd.JetContext)), np.float32)
    context[0, fd.JetContext.LOG_PT] = math.log(50.0)
    context[0, fd.JetContext.ETA] = 1.0
    context[0, fd.JetContext.COS_PHI] = 1.0
    target = np.zeros((1, len(fd.JetTarget)), np.float32)
    target[0, [fd.JetTarget.PT_RESPONSE, fd.JetTarget.DETA, fd.JetTarget.DPHI, fd.JetTarget.MASS, fd.JetTarget.N_CONST]] = (
        0.9, 0.1, 0.2, 8.0, 12.4)  # fmt: skip
    objects = jet.decode(context, target)
    assert list(objects) == ["pt", "eta", "phi", "m", "n_const"] and objects["n_const"].dtype == np.int32
    np.testing.assert_allclose([objects[k][0] for k in ("pt", "eta", "phi", "m")], [45.0, 1.1, 0.2, 8.0], rtol=1e-6)
    assert objects["n_const"][0] == 12
    track = FLASHSIM.kinds["track"]
    ctx = np.zeros((1, len(fd.TrackContext)), np.float32)
    ctx[0, [fd.TrackContext.LOG_PT, fd.TrackContext.SIN_PHI, fd.TrackContext.CHARGE, fd.TrackContext.VZ]] = (
        math.log(4.0), 1.0, -1.0, 3.0)  # fmt: skip
    tgt = np.array([[1.5, 0.0, 0.0, 0.01, 0.5]], np.float32)  # pt ratio, deta, dphi, d0, dz0
    objects = track.decode(ctx, tgt)
    assert list(objects) == ["pt", "eta", "phi", "charge", "d0", "z0"] and objects["charge"].tolist() == [-1]
    np.testing.assert_allclose([objects[k][0] for k in ("pt", "phi", "z0")], [6.0, math.pi / 2, 3.5], rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape(f"unknown flash-sim kind 'calo'; choose one of {sorted(fd.KINDS)}")):
        fd.reconstruct("calo", ctx, tgt)


def test_every_flashsim_model_reads_the_context_of_one_kind():
    for name in list_models(FLASHSIM):
        if not name.startswith("flashsim-"):
            continue  # toy registrations of other tests
        context = get_spec(name).inputs[0].feature_names
        assert [k for k in FLASHSIM.kinds.values() if k.context_names == context] == [FLASHSIM.kinds[name[9:]]]


def test_references_resolve_to_the_implementations():
    from hepzoo.training import tasks
    from hepzoo.validation import flashsim, gate, mlpf, report

    assert MLPF.training_task.resolve() is tasks.MLPFTask and FLASHSIM.training_task.resolve() is tasks.FlashSimTask
    assert MLPF.training_metrics.resolve() is mlpf.physics_metrics and FLASHSIM.training_metrics is None
    assert MLPF.validation.measure.resolve() is mlpf.compare_runtime_with_baseline
    assert FLASHSIM.validation.measure.resolve() is flashsim.evaluate_runtime
    assert (MLPF.validation.quantities.resolve(), FLASHSIM.validation.quantities.resolve()) == (
        gate.mlpf_quantities, gate.flashsim_quantities)  # fmt: skip
    assert (MLPF.validation.sections.resolve(), FLASHSIM.validation.plots.resolve()) == (
        report.mlpf_sections, report.flashsim_plots)  # fmt: skip
    for family in families():
        hooks = family.validation.resolve()
        for field in ("measure", "quantities", "plots", "sections", "release_metrics", "format_release"):
            assert callable(getattr(hooks, field).resolve()), (family, field)
    with pytest.raises(ValueError, match="expected 'package.module:attribute'"):
        Ref("hepzoo.models.families")


def test_families_import_neither_torch_nor_the_registry():
    code = (
        "import sys; import hepzoo.models.families, hepzoo.runtime, hepzoo.export.card;"
        "assert 'torch' not in sys.modules and 'hepzoo.models.registry' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
