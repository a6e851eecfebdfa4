"""Zoo releases: create from a run, list, show, reload the same weights; and every committed release loads."""

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hepzoo.cli import app
from hepzoo.export.zoo import create_release, find_release, list_releases, sha256_of
from hepzoo.models import create_model, get_spec
from hepzoo.training.checkpoint import save_checkpoint


def _fake_run(tmp_path):
    run = tmp_path / "run"
    model = create_model("mlpf-transformer", width=16, num_layers=1)
    save_checkpoint(run / "best.pt", {"model": model.state_dict(), "step": 1})
    config = {"model": {"name": "mlpf-transformer", "kwargs": {"width": 16, "num_layers": 1}}, "seed": 5,
              "optim": {"epochs": 1, "lr": 1e-3}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run, model


def _release_args(tmp_path, monkeypatch, n_events: int):
    """A fake MLPF run, a generated ttbar test file of ``n_events``, a recipe, the zoo in tmp_path, and the
    ``hepzoo zoo release`` arguments for them: ``(run, test_file, args)``."""
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    run, _ = _fake_run(tmp_path)
    test_file = tmp_path / "test.root"
    generate(GenerationConfig(SourceSpec("ttbar"), n_events=n_events, seed=9), test_file, progress=False)
    recipe = tmp_path / "recipe.sh"
    recipe.write_text(f"hepzoo generate ttbar -n {n_events} --seed 9 -o test.root\n")
    monkeypatch.setenv("HEPZOO_ZOO", str(tmp_path / "zoo"))
    return run, test_file, ["zoo", "release", str(run), "tiny", "1", "--recipe", str(recipe), "--test", str(test_file)]


def test_release_round_trip_and_cli(tmp_path, monkeypatch):
    run, model = _fake_run(tmp_path)
    root = tmp_path / "zoo"
    recipe = {"commands": ["hepzoo generate ttbar -n 10 --seed 1 -o a.root"]}
    release = create_release(run, "my-model", "1", recipe, {"note": 1}, root=root)
    assert [(r.name, r.version) for r in list_releases(root)] == [("my-model", "1")]
    rebuilt = release.build_model()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        create_release(run, "my-model", "1", recipe, root=root)
    with pytest.raises(ValueError, match="available"):
        find_release("my-model", "7", root=root)

    monkeypatch.setenv("HEPZOO_ZOO", str(root))
    runner = CliRunner()
    listed = runner.invoke(app, ["zoo", "list"])
    assert listed.exit_code == 0 and "my-model" in listed.output
    shown = runner.invoke(app, ["zoo", "show", "my-model"])
    assert shown.exit_code == 0 and "hepzoo generate ttbar" in shown.output
    missing = runner.invoke(app, ["zoo", "show", "nope"])
    assert missing.exit_code == 1 and "my-model" in missing.output


def test_failed_release_leaves_nothing(tmp_path):
    run, _ = _fake_run(tmp_path)
    (run / "config.yaml").unlink()
    root = tmp_path / "zoo"
    with pytest.raises(FileNotFoundError):
        create_release(run, "broken", "1", {}, root=root)
    assert list((root / "broken").iterdir()) == []


@pytest.mark.parametrize("release", list_releases(), ids=lambda r: f"{r.name}-{r.version}")
def test_committed_releases_load_and_run(release):
    """Every release in zoo/ rebuilds from its config and weights and runs on the registry's dummy inputs."""
    model = release.build_model()
    spec = get_spec(release.config["model"]["name"])
    granularity = int(getattr(model, "element_granularity", spec.export.element_granularity))
    inputs = spec.export.make_inputs(2, 2 * granularity, 0)
    outputs = model(*inputs.values())
    assert all(torch.isfinite(o).all() for o in outputs)
    assert release.dataset.get("commands"), "a release must record its dataset recipe"
    card_path = release.path / "card.json"
    if card_path.exists():  # exported: the card validates and matches the model.onnx next to it
        from hepzoo.export.card import load_card

        card = load_card(card_path)
        assert card.name == release.name and card.version == release.version


def test_release_command_measures_mlpf_against_pf(tmp_path, monkeypatch):
    _, _, args = _release_args(tmp_path, monkeypatch, 4)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    release = find_release("tiny", root=tmp_path / "zoo")
    metrics = release.metrics
    assert metrics["n_events"] == 4
    assert set(metrics["mlpf"]) == set(metrics["pf"]) == {"particles", "jets"}
    assert metrics["pf"]["jets"]["inclusive"]["n"] > 0
    assert release.dataset["commands"] == ["hepzoo generate ttbar -n 4 --seed 9 -o test.root"]


def test_release_command_takes_a_working_point(tmp_path, monkeypatch):
    """--working-point writes the chosen class_logit_bias into the release config (the run's stays as it was),
    records the calibration sample, and the released model applies it."""
    import json

    run, test_file, args = _release_args(tmp_path, monkeypatch, 3)
    bias = [0.0, 0.0, 0.15, 0.0, 0.0, -1.0]
    wp = tmp_path / "wp.json"
    wp.write_text(json.dumps({"class_logit_bias": bias, "events": {"file": str(test_file), "n": 3}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"class_logit_bias": bias}))
    refused = CliRunner().invoke(app, [*args, "--working-point", str(bad)])
    assert refused.exit_code == 1 and "not a working-point JSON" in refused.output
    result = CliRunner().invoke(app, [*args, "--working-point", str(wp)])
    assert result.exit_code == 0, result.output
    release = find_release("tiny", root=tmp_path / "zoo")
    assert release.config["model"]["kwargs"]["class_logit_bias"] == bias
    assert "class_logit_bias" not in yaml.safe_load((run / "config.yaml").read_text())["model"]["kwargs"]
    assert release.dataset["working_point"]["calibration_events"] == 3
    assert release.dataset["working_point"]["calibration_sha256"] == sha256_of(test_file)
    released = release.build_model()
    assert released.heads.class_logit_bias.tolist() == pytest.approx(bias)


def test_release_command_sets_decoding_options(tmp_path, monkeypatch):
    """--decoding sets a decoding option in the release config only, is recorded, and must agree with the decoding
    the working point was chosen with."""
    import json

    run, test_file, args = _release_args(tmp_path, monkeypatch, 3)
    wp = tmp_path / "wp.json"
    wp.write_text(json.dumps({"class_logit_bias": [0.0] * 6, "events": {"file": str(test_file), "n": 3}}))
    refused = CliRunner().invoke(app, [*args, "--decoding", "massless_clusters=true", "--working-point", str(wp)])
    assert refused.exit_code == 1 and "chosen with decoding {}" in refused.output
    unknown = CliRunner().invoke(app, [*args, "--decoding", "dropout=0.5"])
    assert unknown.exit_code == 1 and "decoding option 'dropout=0.5'" in unknown.output
    result = CliRunner().invoke(app, [*args, "--decoding", "massless_clusters=true"])
    assert result.exit_code == 0, result.output
    release = find_release("tiny", root=tmp_path / "zoo")
    assert release.config["model"]["kwargs"]["massless_clusters"] is True
    assert release.dataset["decoding"] == {"massless_clusters": True}
    assert "massless_clusters" not in yaml.safe_load((run / "config.yaml").read_text())["model"]["kwargs"]
    assert release.build_model().heads.massless_clusters


def test_release_command_measures_flashsim_against_the_noise_floor(tmp_path, monkeypatch):
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    run = tmp_path / "run"
    model = create_model("flashsim-jet")
    save_checkpoint(run / "best.pt", {"model": model.state_dict(), "step": 1})
    config = {"model": {"name": "flashsim-jet", "kwargs": {}}, "data": {"kind": "jet"}, "seed": 1,
              "optim": {"epochs": 1, "lr": 1e-3}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    files = []
    for seed in (11, 12):
        files.append(tmp_path / f"full_{seed}.root")
        generate(GenerationConfig(SourceSpec("ttbar"), n_events=6, seed=seed), files[-1], progress=False)
    recipe = tmp_path / "recipe.sh"
    recipe.write_text("hepzoo generate ttbar -n 6 --seed 11 -o full_11.root\n")
    monkeypatch.setenv("HEPZOO_ZOO", str(tmp_path / "zoo"))
    args = ["zoo", "release", str(run), "fj", "1", "--recipe", str(recipe), "--test", str(files[0])]
    missing_floor = CliRunner().invoke(app, args)
    assert missing_floor.exit_code == 1 and "--noise-floor" in missing_floor.output
    result = CliRunner().invoke(app, [*args, "--noise-floor", str(files[1])])
    assert result.exit_code == 0, result.output
    metrics = find_release("fj", root=tmp_path / "zoo").metrics
    assert metrics["kind"] == "jet" and set(metrics["auc"]) >= {"flash_vs_full", "noise_floor"}
    assert set(metrics["variables"]) == {"pt_response", "deta", "dphi", "mass", "n_const"}
