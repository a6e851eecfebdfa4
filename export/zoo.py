"""The released-model folder ``zoo/<name>/<version>/``: create a release from a training run, list and show.

A release holds what is needed to use and to reproduce a model:

* ``weights.pt``   — the model's state dict only (``torch.load(..., weights_only=True)``);
* ``config.yaml``  — the exact training config (``hepzoo train zoo/<name>/<version>/config.yaml`` retrains);
* ``dataset.json`` — the dataset recipe: the ``hepzoo generate`` commands with seeds, and file hashes;
* ``metrics.json`` — physics metrics measured at release (MLPF vs the rule-based PF on held-out events);
* ``training_log.jsonl`` — the training run's metrics log.

Export (``model.onnx``) and the model card (``card.json``) are added to the same folder by ``hepzoo export``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:  # torch is needed to read or write weights, not to find a release (the runtime runs without it)
    import torch

WEIGHTS = "weights.pt"
CONFIG = "config.yaml"
DATASET = "dataset.json"
METRICS = "metrics.json"
TRAINING_LOG = "training_log.jsonl"


ZOO_ENV = "HEPZOO_ZOO"


def packaged_zoo() -> Path:
    """The releases installed with the package: the ``hepzoo.zoo`` data package (the checkout's ``zoo/`` in an
    editable install, ``site-packages/hepzoo/zoo`` in a wheel install)."""
    from importlib.resources import files

    return Path(str(files("hepzoo.zoo")))


def zoo_roots() -> list[Path]:
    """The zoo search path: the folders of ``$HEPZOO_ZOO`` (``os.pathsep``-separated, user folders first), then the
    packaged zoo (:func:`packaged_zoo`). A release found in an earlier folder hides the same name and version in
    a later one."""
    folders = [Path(p) for p in os.environ.get(ZOO_ENV, "").split(os.pathsep) if p.strip()]
    packaged = packaged_zoo()
    if not any(_same_folder(f, packaged) for f in folders):
        folders.append(packaged)
    return folders


def _same_folder(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def zoo_root() -> Path:
    """Where new releases are written: the first folder of :func:`zoo_roots` (``$HEPZOO_ZOO``'s first folder if
    set, else the packaged zoo)."""
    return zoo_roots()[0]


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    path: Path

    @property
    def zoo(self) -> Path:
        """The zoo folder the release comes from (one of :func:`zoo_roots`)."""
        return self.path.parent.parent

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / CONFIG).read_text())

    @property
    def metrics(self) -> dict:
        file = self.path / METRICS
        return json.loads(file.read_text()) if file.exists() else {}

    @property
    def dataset(self) -> dict:
        file = self.path / DATASET
        return json.loads(file.read_text()) if file.exists() else {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        import torch

        return torch.load(self.path / WEIGHTS, map_location="cpu", weights_only=True)

    def build_model(self) -> torch.nn.Module:
        """The registered model with the release's hyper-parameters and weights, in eval mode."""
        from hepzoo.models import create_model

        cfg = self.config["model"]
        model = create_model(cfg["name"], **cfg.get("kwargs", {}))
        model.load_state_dict(self.state_dict())
        return model.eval()


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def list_releases(root: Path | None = None) -> list[Release]:
    """Releases in ``root``, or in every folder of :func:`zoo_roots` (an earlier folder's ``name``/``version``
    hides a later one's), sorted by name and version."""
    found: dict[tuple[str, str], Release] = {}
    for folder in [root] if root is not None else zoo_roots():
        for release in _releases_in(folder):
            found.setdefault((release.name, release.version), release)
    return sorted(found.values(), key=lambda r: (r.name, _version_key(r.version)))


def _releases_in(root: Path) -> list[Release]:
    if not root.is_dir():
        return []
    releases = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        versions = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]  # not .<v>.tmp
        for version_dir in sorted(versions, key=lambda p: _version_key(p.name)):
            if (version_dir / WEIGHTS).exists() and (version_dir / CONFIG).exists():
                releases.append(Release(model_dir.name, version_dir.name, version_dir))
    return releases


def find_release(name: str, version: str | None = None, root: Path | None = None) -> Release:
    """The release ``name`` at ``version`` (default: the highest version); errors list what exists."""
    releases = list_releases(root)
    candidates = [r for r in releases if r.name == name]
    if not candidates:
        known = sorted({r.name for r in releases})
        where = root if root is not None else os.pathsep.join(str(f) for f in zoo_roots())
        raise ValueError(f"no release named {name!r} in {where}; available: {known}")
    if version is None:
        return candidates[-1]
    for release in candidates:
        if release.version == version:
            return release
    raise ValueError(f"{name!r} has no version {version!r}; available: {[r.version for r in candidates]}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def create_release(
    run_dir: Path,
    name: str,
    version: str,
    dataset_recipe: dict,
    metrics: dict | None = None,
    root: Path | None = None,
    checkpoint: str = "best.pt",
    config: dict | None = None,
) -> Release:
    """Copy a training run's best weights (state dict only), config and log into ``zoo/<name>/<version>/``.

    ``config``: the release's config instead of the run's ``config.yaml`` (e.g. with a decoding working point
    chosen after training).

    Written into a temporary folder and renamed, so a failed release leaves nothing half-written.
    """
    import torch

    from hepzoo.training.checkpoint import load_model_weights

    root = root or zoo_root()
    target = root / name / version
    if target.exists():
        raise FileExistsError(f"release {target} already exists; choose another version")
    tmp = root / name / f".{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        torch.save(load_model_weights(run_dir / checkpoint), tmp / WEIGHTS)
        if config is None:
            shutil.copyfile(run_dir / "config.yaml", tmp / CONFIG)
        else:
            (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        if (run_dir / "metrics.jsonl").exists():
            shutil.copyfile(run_dir / "metrics.jsonl", tmp / TRAINING_LOG)
        (tmp / DATASET).write_text(json.dumps(dataset_recipe, indent=2) + "\n")
        if metrics is not None:
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Release(name, version, target)


def describe(release: Release) -> str:
    """Multi-line human-readable summary for ``hepzoo zoo show``."""
    cfg = release.config
    weights = release.path / WEIGHTS
    try:  # counting parameters reads the weights with torch (the train extra); the rest of the summary does not
        n_params = f"{sum(t.numel() for t in release.state_dict().values())} parameters, "
    except ImportError:
        n_params = ""
    lines = [
        f"{release.name} {release.version}  ({release.path})",
        f"  model: {cfg['model']['name']} {cfg['model'].get('kwargs', {})}",
        f"  weights: {weights.name}, {n_params}{weights.stat().st_size / 1e6:.2f} MB, sha256 {sha256_of(weights)[:16]}...",
        f"  training: seed {cfg.get('seed')}, {cfg['optim']['epochs']} epochs, lr {cfg['optim']['lr']}",
    ]
    recipe = release.dataset
    for command in recipe.get("commands", []):
        lines.append(f"  data: {command}")
    metrics = release.metrics
    jets = metrics.get("mlpf", {}).get("jets", {}).get("inclusive")
    pf_jets = metrics.get("pf", {}).get("jets", {}).get("inclusive")
    if jets and pf_jets:
        lines.append(
            f"  ttbar jets (IQR/median): MLPF {jets['iqr_over_median']:.3f} vs PF {pf_jets['iqr_over_median']:.3f}; "
            f"median MLPF {jets['median']:.3f} vs PF {pf_jets['median']:.3f}"
        )
    auc = metrics.get("auc")
    if auc:
        lines.append(
            f"  fidelity vs full chain: classifier AUC {auc['flash_vs_full']:.3f} (noise floor {auc['noise_floor']:.3f})"
        )
    return "\n".join(lines)
