"""Integrity of every release artifact: the card records the sha256 of every file a backend loads (model.onnx,
and the torch backend's config.yaml and weights.pt), each is checked before it is loaded, and a mismatch is one
line naming the card and the file (no pydantic dump, no documentation URL)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from hepzoo.export.card import CARD, IntegrityError, load_card  # noqa: E402
from hepzoo.export.zoo import list_releases  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402
from hepzoo.runtime.backends import BackendUnavailable  # noqa: E402
from hepzoo.runtime.backends.torch_backend import TorchBackend  # noqa: E402

RELEASES = [r for r in list_releases() if (r.path / CARD).is_file()]
V1 = [r for r in RELEASES if r.version == "1"]


def _copy(release, tmp_path: Path) -> Path:
    folder = tmp_path / release.name / release.version
    folder.mkdir(parents=True)
    for name in ("card.json", "model.onnx", "weights.pt", "config.yaml"):
        shutil.copyfile(release.path / name, folder / name)
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _single_line(message: str) -> str:
    assert "\n" not in message and "https://" not in message and "validation error" not in message, message
    return message


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def test_every_card_hashes_every_loaded_file(release):
    card = load_card(release.path)
    recorded = {f.file: f.sha256 for f in card.files}
    assert set(recorded) >= {"config.yaml", "weights.pt"}
    for name, sha in recorded.items():
        assert sha == _sha(release.path / name), name
    assert card.onnx.sha256 == _sha(release.path / card.onnx.file)


def _scaled_weights(folder: Path, factor: float = 1.05) -> None:
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    torch.save({k: v * factor if v.is_floating_point() else v for k, v in state.items()}, folder / "weights.pt")


@pytest.mark.parametrize(
    "release", [r for r in RELEASES if r.name == "mlpf-gnnlsh"][:1] + [r for r in V1 if r.name == "flashsim-jet"][:1],
    ids=lambda r: r.name,
)
def test_tampered_weights_are_refused_by_torch_and_at_load(release, tmp_path):
    folder = _copy(release, tmp_path)
    TorchBackend(folder, device="cpu")  # the untouched copy loads
    _scaled_weights(folder)
    actual = _sha(folder / "weights.pt")
    recorded = next(f.sha256 for f in load_card(folder, verify_onnx=False).files if f.file == "weights.pt")
    expected = f"{folder / CARD}: sha256 mismatch: the card records {recorded} but {folder / 'weights.pt'} has {actual}"
    with pytest.raises(IntegrityError) as info:
        TorchBackend(folder, device="cpu")
    assert _single_line(str(info.value)) == expected
    with pytest.raises(IntegrityError) as info:  # the session refuses the tampered release whatever the backend
        Session.load(folder, backend="onnxruntime-cpu")
    assert str(info.value) == expected


def test_tampered_config_is_refused(tmp_path):
    folder = _copy(V1[0], tmp_path)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("seed:", "seed: 7\n_seed:", 1))
    with pytest.raises(IntegrityError, match=r"sha256 mismatch: the card records [0-9a-f]{64} but .*config\.yaml has"):
        TorchBackend(folder, device="cpu")


def test_card_without_hashes_for_loaded_files(tmp_path):
    """An old card (hash of model.onnx only) still serves backends that load model.onnx; torch refuses it."""
    folder = _copy(V1[0], tmp_path)
    card = json.loads((folder / CARD).read_text())
    del card["files"]
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(BackendUnavailable) as info:
        TorchBackend(folder, device="cpu")
    assert "records no sha256 for config.yaml and weights.pt" in _single_line(str(info.value))
    session = Session.load(folder, backend="onnxruntime-cpu")
    assert session.card.files == []


def test_file_named_without_hash_is_refused(tmp_path):
    folder = _copy(V1[0], tmp_path)
    card = json.loads((folder / CARD).read_text())
    card["files"][1].pop("sha256")
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError) as info:
        load_card(folder)
    assert _single_line(str(info.value)) == f"{folder / CARD}: invalid model card: files.1.sha256: Field required"
    card["files"][1]["sha256"] = "abc"
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"files\.1\.sha256: sha256 must be 64 lowercase hex digits, got 'abc'"):
        load_card(folder)
    card["files"][1].update(sha256="0" * 64, file="../weights.pt")
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"files\.1\.file: file '\.\./weights\.pt' must be a path inside the release"):
        load_card(folder)


def test_tampered_onnx_is_one_line_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from hepzoo.cli import app

    folder = _copy(V1[0], tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        Session.load(folder)
    message = _single_line(str(info.value))
    assert message.startswith(f"{folder / CARD}: sha256 mismatch: the card records ")
    assert message.endswith(f"but {folder / 'model.onnx'} has {hashlib.sha256(bytes(data)).hexdigest()}")
    result = CliRunner().invoke(app, ["run", str(folder), "-i", str(tmp_path / "x.root"), "-o", str(tmp_path / "o"),
                                      "--no-progress"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines == [f"error: {message}"], result.output
    assert not (tmp_path / "o").exists()


def test_export_records_what_the_released_cards_record():
    """hepzoo export writes ``files`` with :func:`artifact_files`: the same entries the committed cards carry."""
    from hepzoo.export.card import artifact_files

    for release in RELEASES:
        assert artifact_files(release.path) == load_card(release.path).files, release.path


def test_backends_are_built_from_a_verified_release_only(tmp_path):
    """create_backend verifies a path it is given (card, folder containment, sha256) before any backend reads it,
    and Session.load hands the backend the verified release (card and folder together)."""
    from hepzoo.runtime.backends import create_backend
    from hepzoo.runtime.release import VerifiedRelease, verify_release

    release = next(r for r in V1 if r.name == "flashsim-jet")
    folder = _copy(release, tmp_path)
    verified = verify_release(folder)
    assert isinstance(verified, VerifiedRelease) and verified.card.name == release.name
    assert verified.onnx_path == folder.resolve() / "model.onnx"
    assert create_backend("onnxruntime-cpu", folder / "model.onnx").name == "onnxruntime-cpu"
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")  # one byte appended: the sha256 no longer matches
    for target in (onnx, folder, folder / CARD):
        with pytest.raises(IntegrityError) as err:
            create_backend("onnxruntime-cpu", target)
        assert "model.onnx" in _single_line(str(err.value))
    card = json.loads((folder / CARD).read_text())
    card["onnx"]["file"] = "../escape.onnx"
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="outside the release folder"):
        verify_release(folder)
