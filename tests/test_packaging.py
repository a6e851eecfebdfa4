"""Packaging: the releases travel with the package (``hepzoo.zoo`` package data, found outside any checkout), the
zoo search path (``$HEPZOO_ZOO`` folders first, then the packaged zoo), and the dependency layers of
pyproject.toml (core without torch; exact versions in constraints.txt)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hepzoo.cli import app
from hepzoo.export.card import CARD, load_card
from hepzoo.export.zoo import find_release, list_releases, packaged_zoo, zoo_root, zoo_roots

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ZOO_DATA = PROJECT["tool"]["setuptools"]["package-data"]["hepzoo.zoo"]


def _shipped(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in ZOO_DATA)


def test_the_packaged_zoo_is_the_checkouts_zoo_in_an_editable_install():
    assert packaged_zoo().resolve() == (ROOT / "zoo").resolve()
    assert PROJECT["tool"]["setuptools"]["package-dir"]["hepzoo.zoo"] == "zoo"


def test_package_data_holds_every_file_a_backend_loads_and_no_training_log():
    releases = [r for r in list_releases(packaged_zoo()) if (r.path / CARD).is_file()]
    assert {r.name for r in releases} >= {"mlpf-gnnlsh", "mlpf-transformer", "flashsim-jet", "flashsim-track"}
    for release in releases:
        card = load_card(release.path)
        rel = f"{release.name}/{release.version}"
        for name in [CARD, card.onnx.file, *(f.file for f in card.files)]:
            assert _shipped(f"{rel}/{name}"), f"{rel}/{name} is not package data"
        assert {f.file for f in card.files} >= {"config.yaml", "weights.pt"}  # the torch backend's files are hashed
        assert not _shipped(f"{rel}/training_log.jsonl")


def _copy_release(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in (CARD, "model.onnx", "config.yaml", "weights.pt", "dataset.json"):
        shutil.copyfile(src / name, dst / name)
    return dst


def test_zoo_search_path_user_folders_first_then_the_packaged_zoo(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    jet = packaged_zoo() / "flashsim-jet" / "1"
    _copy_release(jet, a / "flashsim-jet" / "1")
    _copy_release(jet, b / "flashsim-jet" / "1")  # hidden by a's
    _copy_release(jet, b / "my-jet" / "1")
    (b / "my-jet" / ".2.tmp").mkdir()  # an interrupted release is no version
    shutil.copyfile(jet / "config.yaml", b / "my-jet" / ".2.tmp" / "config.yaml")
    shutil.copyfile(jet / "weights.pt", b / "my-jet" / ".2.tmp" / "weights.pt")
    monkeypatch.setenv("HEPZOO_ZOO", f"{a}{os.pathsep}{os.pathsep}{b}{os.pathsep}")  # empty entries are ignored
    assert zoo_roots() == [a, b, packaged_zoo()] and zoo_root() == a  # writes go to the first folder

    assert find_release("flashsim-jet", "1").zoo == a
    assert find_release("my-jet").path == b / "my-jet" / "1"
    newest = max((r.version for r in list_releases(packaged_zoo()) if r.name == "mlpf-gnnlsh"), key=int)
    assert find_release("mlpf-gnnlsh").zoo == packaged_zoo() and find_release("mlpf-gnnlsh").version == newest
    keys = [(r.name, r.version) for r in list_releases()]
    assert len(keys) == len(set(keys)) and ("my-jet", "1") in keys and ("my-jet", ".2.tmp") not in keys
    assert keys == sorted(keys, key=lambda k: (k[0], tuple(int(p) for p in k[1].split("."))))

    from hepzoo.runtime import Session

    assert Session.load("flashsim-jet", backend="onnxruntime-cpu").folder == (a / "flashsim-jet" / "1").resolve()

    listed = CliRunner().invoke(app, ["zoo", "list"])
    assert listed.exit_code == 0, listed.output
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in listed.output.splitlines()}
    assert rows[("flashsim-jet", "1")] == str(a)
    assert rows[("my-jet", "1")] == str(b)
    assert rows[("mlpf-gnnlsh", "3")] == str(packaged_zoo())

    missing = CliRunner().invoke(app, ["zoo", "show", "nope"])
    assert missing.exit_code == 1 and str(a) in missing.output and "my-jet" in missing.output


def test_the_single_folder_form_still_writes_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HEPZOO_ZOO", str(tmp_path / "zoo"))
    assert zoo_root() == tmp_path / "zoo" and zoo_roots()[-1] == packaged_zoo()
    monkeypatch.delenv("HEPZOO_ZOO")
    assert zoo_roots() == [packaged_zoo()] and zoo_root() == packaged_zoo()


# ---- dependency layers -----------------------------------------------------------------------------------------


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_core_dependencies_are_ranges_without_torch_and_constraints_pin_them():
    core = PROJECT["project"]["dependencies"]
    assert "torch" not in {_name(r) for r in core}
    assert all("==" not in r and ("<" in r or ">=" in r) for r in core), core
    extras = PROJECT["project"]["optional-dependencies"]
    assert {"train", "generate", "validate", "dask", "tune", "bench", "dev", "all"} <= set(extras)
    assert "torch" in {_name(r) for r in extras["train"]}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and "[" not in name, line  # exact versions; constraints take no extras
            pins[name.lower().replace("_", "-")] = version
    wanted = {_name(r) for r in core} | {_name(r) for group in extras.values() for r in group} | {"torch"}
    wanted -= {"hepzoo"}  # the self-references of tune, bench and all
    assert wanted <= set(pins), sorted(wanted - set(pins))
    assert pins["torch"] == "2.13.0"
    included = set(re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(","))
    assert included == set(extras) - {"all"}


# ---- an installed wheel, outside any checkout --------------------------------------------------------------------


def test_a_built_wheel_carries_the_zoo_and_loads_releases_outside_the_checkout(tmp_path):
    """The wheel holds the releases' deployable files (no training logs); unpacked on its own, away from this
    checkout, ``Session.load("mlpf-gnnlsh")`` finds the packaged release."""
    source = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/), and stale files there would ship
    skip = (".git", ".venv", "build", "*.egg-info", "__pycache__", "data", "runs", "checkpoints", "demo_out",
            "validate_out", "cpp_bindings", "tests", "tests_gpu")  # fmt: skip
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("hepzoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for release in list_releases(packaged_zoo()):
        card = load_card(release.path, verify_onnx=False)
        for file in [CARD, card.onnx.file, *(f.file for f in card.files)]:
            assert f"hepzoo/zoo/{release.name}/{release.version}/{file}" in names
    assert not [n for n in names if "training_log" in n or n.endswith(".sh")]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import json, sys; from hepzoo.runtime import Session; from hepzoo.export.zoo import zoo_roots; "
        "s = Session.load('mlpf-gnnlsh', backend='onnxruntime-cpu'); "
        "print(json.dumps([str(s.folder), s.version, [str(r) for r in zoo_roots()], 'torch' in sys.modules]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "HEPZOO_ZOO"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**env, "PYTHONPATH": str(site)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    folder, version, roots, torch_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    newest = max((r.version for r in list_releases(packaged_zoo()) if r.name == "mlpf-gnnlsh"), key=int)
    assert Path(folder) == (site / "hepzoo" / "zoo" / "mlpf-gnnlsh" / newest).resolve() and version == newest
    assert roots == [str(site / "hepzoo" / "zoo")] and not torch_loaded
