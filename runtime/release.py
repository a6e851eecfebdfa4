"""A verified release: what the runtime hands to a backend instead of a file path.

:func:`verify_release` is the one place a release folder is trusted: the card must validate, the ONNX file it names
must lie inside the folder (no ``..``, no absolute path, no symlink out of it) and have the recorded sha256. The
result, :class:`VerifiedRelease`, carries the folder and the card together, so a backend never turns a path back
into its release folder nor reads the card a second time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hepzoo.export.card import CARD, ModelCard, load_card

__all__ = ["VerifiedRelease", "release_folder_of", "verify_release"]


@dataclass(frozen=True)
class VerifiedRelease:
    """A release folder whose card validated and whose ONNX file is inside it with the recorded sha256."""

    folder: Path
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.card.onnx.file


def verify_release(folder: str | os.PathLike) -> VerifiedRelease:
    """Check the release in ``folder`` (see the module docstring); errors name the card and the file."""
    folder = Path(folder).resolve()
    unverified = load_card(folder, verify_onnx=False)
    onnx_path = (folder / unverified.onnx.file).resolve()
    if not onnx_path.is_relative_to(folder):
        raise ValueError(
            f"{folder / CARD}: onnx.file {unverified.onnx.file!r} points outside the release folder {folder}"
        )
    return VerifiedRelease(folder, load_card(folder))  # checks the sha256 of the ONNX file (error names it)


def release_folder_of(path: str | os.PathLike) -> Path:
    """The release folder of ``path``: the folder itself, or the folder of its ``card.json`` or ONNX file."""
    path = Path(path)
    return path.parent if path.is_file() else path
