"""A damaged release in a user zoo (``HEPZOO_ZOO``) is refused with one line naming the damaged file and what is
wrong with it, by ``Session.load`` and by the CLI: no traceback, no pydantic dump, no documentation URL."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from hepzoo.cli import app  # noqa: E402
from hepzoo.export.zoo import find_release, packaged_zoo  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402

NAME = "mlpf-gnnlsh"
VERSION = find_release(NAME, root=packaged_zoo()).version  # the newest: what `hepzoo run NAME` resolves to


def _rehash_onnx(folder):
    """Make the card record the sha256 of the (damaged) model.onnx: the damage then reaches the backend."""
    card = json.loads((folder / "card.json").read_text())
    card["onnx"]["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "card.json").write_text(json.dumps(card))


def _card_text(folder, text):
    (folder / "card.json").write_text(text)


def _garbage_onnx(folder):
    (folder / "model.onnx").write_bytes(b"this is not an ONNX graph\n" * 8)
    _rehash_onnx(folder)


def _truncated_onnx(folder):
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    _rehash_onnx(folder)


def _flipped_onnx_byte(folder):
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))


def _card_field(folder, **changes):
    card = json.loads((folder / "card.json").read_text())
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card))


# (id, damage, damaged file, backends, what the message says)
DAMAGE = [
    ("card-truncated", lambda f: _card_text(f, (f / "card.json").read_text()[:300]), "card.json", "not JSON"),
    ("card-empty", lambda f: _card_text(f, ""), "card.json", "not JSON"),
    ("card-binary", lambda f: (f / "card.json").write_bytes(b"\xff\xfe\x00\x81card"), "card.json", "not UTF-8"),
    ("card-list", lambda f: _card_text(f, "[1, 2]"), "card.json", "valid dictionary"),
    ("card-many-errors", lambda f: _card_text(f, json.dumps({"name": 3, "family": "x"})), "card.json",
     "family: Input should be"),
    ("card-unknown-key", lambda f: _card_field(f, extra_key=1), "card.json", "extra_key: Extra inputs are not permitted"),
    ("card-bad-sha", lambda f: _card_field(f, onnx={"file": "model.onnx", "sha256": "xyz"}), "card.json",
     "onnx.sha256: sha256 must be 64 lowercase hex digits"),
    ("onnx-flipped-byte", _flipped_onnx_byte, "model.onnx", "sha256 mismatch"),
    ("onnx-missing", lambda f: (f / "model.onnx").unlink(), "model.onnx", "does not exist"),
    ("onnx-garbage", _garbage_onnx, "model.onnx", "can load"),
    ("onnx-truncated", _truncated_onnx, "model.onnx", "can load"),
]  # fmt: skip


@pytest.fixture
def user_zoo(tmp_path, monkeypatch):
    """A copy of the newest packaged mlpf-gnnlsh in a user zoo that comes first on the search path."""
    folder = tmp_path / "zoo" / NAME / VERSION
    shutil.copytree(packaged_zoo() / NAME / VERSION, folder)
    monkeypatch.setenv("HEPZOO_ZOO", str(tmp_path / "zoo"))
    assert find_release(NAME, VERSION).path == folder  # the user copy hides the packaged release
    return folder


def _one_line(message: str) -> str:
    assert "\n" not in message.strip() and "https://" not in message and "validation error" not in message, message
    assert "Traceback" not in message and "pydantic" not in message, message
    return message.strip()


@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "numba"])
@pytest.mark.parametrize(("damage", "file", "says"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_session_load_names_the_damaged_file_in_one_line(user_zoo, damage, file, says, backend):
    Session.load(NAME, version=VERSION, backend=backend)  # the intact copy loads
    damage(user_zoo)
    with pytest.raises(ValueError) as info:
        Session.load(NAME, version=VERSION, backend=backend)
    message = _one_line(str(info.value))
    assert message.startswith(str(user_zoo / file)) or f"{user_zoo / file} " in message, message
    assert says in message


@pytest.mark.parametrize(("damage", "file", "says"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_the_cli_names_the_damaged_file_in_one_line(user_zoo, tmp_path, damage, file, says):
    damage(user_zoo)
    out = tmp_path / "out"
    for args in (["run", NAME, "-i", str(tmp_path / "in.root"), "-o", str(out), "--no-progress"],
                 ["validate", NAME, "--data", str(tmp_path / "in.root"), "--out", str(out)]):  # fmt: skip
        result = CliRunner().invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and str(user_zoo / file) in lines[0] and says in lines[0], lines[0]
        _one_line(lines[0])
        assert not out.exists()
