"""Generation end to end: Pythia8 sources, pile-up, HepMC3 input, the full chain, round trip, seeding."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

from hepzoo.cli import app
from hepzoo.datasets import generate as generation
from hepzoo.datasets.generate import GenerationConfig, generate
from hepzoo.datasets.io import events_to_awkward, read_events
from hepzoo.datasets.schema import COLLECTIONS, EVENT_SCALARS, Process
from hepzoo.datasets.sources import PileupOverlay, PythiaSource, SourceSpec, read_hepmc
from hepzoo.datasets.targets import visible_mask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ttbar_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "ttbar.root"
    config = GenerationConfig(SourceSpec("ttbar"), n_events=12, seed=3, pileup_mu=2.0, chunk_size=5)
    assert generate(config, path, progress=False) == 12
    return config, path


def test_pythia_reseed_is_reproducible_and_seed_dependent():
    source = PythiaSource(SourceSpec("ttbar"), init_seed=1)
    source.reseed(11)
    a = source.next_event()
    source.reseed(11)
    b = source.next_event()
    source.reseed(12)
    c = source.next_event()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert len(a["gen_pid"]) != len(c["gen_pid"]) or not np.array_equal(a["gen_pt"], c["gen_pt"])


def test_gun_respects_ranges_and_zll_has_a_z():
    gun = PythiaSource(SourceSpec("gun", gun_pid=13, gun_pt=(20.0, 30.0), gun_eta=(0.5, 1.0)), init_seed=2)
    for _ in range(20):
        gen = gun.next_event()
        assert abs(gen["gen_pid"][0]) == 13 and len(gen["gen_pid"]) == 1
        assert 20.0 <= gen["gen_pt"][0] < 30.0 and 0.5 <= gen["gen_eta"][0] < 1.0
        assert gen["gen_charge"][0] == -np.sign(gen["gen_pid"][0])
    zll = PythiaSource(SourceSpec("zll"), init_seed=3)
    masses = []
    for _ in range(10):
        gen = zll.next_event()
        leptons = np.isin(np.abs(gen["gen_pid"]), [11, 13]) & (gen["gen_pt"] > 15)
        pt, eta, phi, m = (gen[k][leptons].astype(float) for k in ("gen_pt", "gen_eta", "gen_phi", "gen_m"))
        if len(pt) < 2:
            continue
        i, j = np.argsort(pt)[-2:]
        p4 = [np.array([pt[k] * np.cos(phi[k]), pt[k] * np.sin(phi[k]), pt[k] * np.sinh(eta[k])]) for k in (i, j)]
        e = [np.sqrt(p @ p + m[k] ** 2) for p, k in zip(p4, (i, j))]
        tot = p4[0] + p4[1]
        masses.append(np.sqrt((e[0] + e[1]) ** 2 - tot @ tot))
    assert len(masses) >= 5
    assert np.median(masses) == pytest.approx(91.2, abs=6.0)


def test_pileup_overlay_flags_and_vertices():
    hard = PythiaSource(SourceSpec("ttbar"), init_seed=4).next_event()
    overlay = PileupOverlay(mu=5.0, ecm=14000.0, init_seed=5)
    gen, n_pu = overlay.overlay(hard)
    assert gen["gen_is_pu"].sum() == len(gen["gen_pid"]) - len(hard["gen_pid"])
    assert not gen["gen_is_pu"][: len(hard["gen_pid"])].any()
    if n_pu:
        # pile-up interactions have their own vertices spread along the beam line
        assert np.unique(np.round(gen["gen_vz"][gen["gen_is_pu"]], 3)).size >= min(n_pu, 2)


def test_hepmc3_input_round_trip(tmp_path):
    pyhepmc = pytest.importorskip("pyhepmc")
    source = PythiaSource(SourceSpec("zll"), init_seed=6)
    originals = [source.next_event() for _ in range(3)]
    path = tmp_path / "events.hepmc3"
    with pyhepmc.open(str(path), "w") as writer:
        for number, gen in enumerate(originals):
            event = pyhepmc.GenEvent(pyhepmc.Units.GEV, pyhepmc.Units.MM)
            event.event_number = number
            # all particles leave the primary vertex, which two beam protons enter
            vertex = pyhepmc.GenVertex(pyhepmc.FourVector(gen["gen_vx"][0], gen["gen_vy"][0], gen["gen_vz"][0], 0))
            for pz in (7000.0, -7000.0):
                vertex.add_particle_in(pyhepmc.GenParticle(pyhepmc.FourVector(0, 0, pz, 7000.0), 2212, 4))
            pt, eta, phi, e = (gen[k].astype(float) for k in ("gen_pt", "gen_eta", "gen_phi", "gen_e"))
            for k in range(len(pt)):
                px, py, pz = pt[k] * np.cos(phi[k]), pt[k] * np.sin(phi[k]), pt[k] * np.sinh(eta[k])
                vertex.add_particle_out(pyhepmc.GenParticle(pyhepmc.FourVector(px, py, pz, e[k]), int(gen["gen_pid"][k]), 1))
            event.add_vertex(vertex)
            writer.write(event)
    read = list(read_hepmc(path))
    assert len(read) == 3
    for original, back in zip(originals, read):
        np.testing.assert_array_equal(back["gen_pid"], original["gen_pid"])
        np.testing.assert_array_equal(back["gen_charge"], original["gen_charge"])
        np.testing.assert_allclose(back["gen_pt"], original["gen_pt"], rtol=1e-5)
        np.testing.assert_allclose(back["gen_vz"], original["gen_vz"][0], rtol=1e-5, atol=1e-6)

    out = tmp_path / "from_hepmc.root"
    config = GenerationConfig(SourceSpec("hepmc"), n_events=0, seed=1, chunk_size=2)
    assert generate(config, out, hepmc=path, progress=False) == 3
    events = read_events(out)
    assert events.process.tolist() == [Process.HEPMC] * 3
    assert ak.num(events.gen, axis=1).tolist() == [len(g["gen_pid"]) for g in originals]


def test_round_trip_generate_write_read(ttbar_file):
    config, path = ttbar_file
    events = read_events(path)
    generation._init_worker(config)
    in_memory = events_to_awkward(generation._run_chunk((1, 5, None)))  # chunk 1 = events 5..9
    from_file = events[5:10]
    for name in EVENT_SCALARS:
        np.testing.assert_array_equal(ak.to_numpy(from_file[name]), ak.to_numpy(in_memory[name]))
    for prefix, coll in COLLECTIONS.items():
        for field in coll.field_names:
            a, b = from_file[prefix][field], in_memory[prefix][field]
            assert ak.all(ak.num(a, axis=1) == ak.num(b, axis=1)), f"{prefix}_{field} counts"
            flat_a, flat_b = ak.to_numpy(ak.flatten(a)), ak.to_numpy(ak.flatten(b))
            assert flat_a.dtype == flat_b.dtype
            np.testing.assert_array_equal(flat_a, flat_b, err_msg=f"{prefix}_{field}")
    assert events.event_id.tolist() == list(range(12))
    assert set(events.seed.tolist()) == {3}


def test_output_does_not_depend_on_worker_count(ttbar_file, tmp_path):
    config, path = ttbar_file
    other = tmp_path / "two_workers.root"
    generate(config, other, workers=2, progress=False)
    a, b = read_events(path), read_events(other)
    for field in ("gen_pt", "trk_pt", "clu_e", "pf_pt", "tgt_e"):
        prefix, name = field.split("_", 1)
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(a[prefix][name])), ak.to_numpy(ak.flatten(b[prefix][name])))


def test_targets_assign_each_visible_particle_once_and_conserve_energy(ttbar_file):
    _, path = ttbar_file
    events = read_events(path)
    for event in events:
        gen = {f"gen_{k}": ak.to_numpy(event.gen[k]) for k in ("pid", "eta", "e", "elem_idx")}
        n_elem = len(event.trk) + len(event.clu)
        assert len(event.tgt) == n_elem
        visible = visible_mask(gen)
        slots = gen["gen_elem_idx"]
        assert np.all(slots[visible] >= 0) and np.all(slots[visible] < n_elem)
        assert np.all(slots[~visible] == -1)
        visible_e = gen["gen_e"][visible].astype(np.float64).sum()
        target_e = ak.to_numpy(event.tgt.e).astype(np.float64).sum()
        assert target_e == pytest.approx(visible_e, rel=1e-5)
        # energy in each slot equals the energy of the particles assigned to it
        per_slot = np.bincount(slots[visible], weights=gen["gen_e"][visible], minlength=n_elem)
        np.testing.assert_allclose(ak.to_numpy(event.tgt.e), per_slot, rtol=1e-4, atol=1e-3)


def test_cli_generate_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "gun.root"
    result = runner.invoke(app, ["generate", "gun", "--gun-pid", "22", "-n", "3", "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_events(out).gen.pid.tolist()[0][0] == 22

    result = runner.invoke(app, ["generate", "hepmc", "-o", str(tmp_path / "x.root")])
    assert result.exit_code == 1 and "--hepmc" in result.output

    bad = tmp_path / "broken.hepmc3"
    bad.write_text("this is not HepMC\n")
    target = tmp_path / "never.root"
    result = runner.invoke(app, ["generate", "hepmc", "--hepmc", str(bad), "-o", str(target), "--no-progress"])
    assert result.exit_code != 0
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("never")] == []


def test_pf_baseline_jet_closure(ttbar_file):
    """PF jets reproduce generator jets: median response near 1 and a resolution a PF algorithm reaches."""
    from hepzoo.validation.jets import jet_response, summarize_response

    _, path = ttbar_file
    events = read_events(path)
    _, ratio, efficiency = jet_response(events.genjet, events.recojet)
    summary = summarize_response(ratio)
    assert summary.n >= 30
    assert efficiency > 0.85
    assert 0.88 < summary.median < 1.08
    assert summary.iqr_over_median < 0.3


def test_bad_pythia_setting_fails_fast_with_workers(tmp_path):
    spec = SourceSpec("ttbar", extra_settings=("NoSuchGroup:noSuchFlag = on",))
    target = tmp_path / "bad.root"
    with pytest.raises(ValueError, match="NoSuchGroup"):
        generate(GenerationConfig(spec, n_events=4, chunk_size=2), target, workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []
