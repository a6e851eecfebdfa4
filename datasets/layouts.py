"""Which layout a ROOT file is in: the messages the reader gives when the tree it expects is not there.

A file may hold our ``events`` TTree, a Delphes ``Delphes`` tree, a CMS NanoAOD ``Events`` tree, or an
RNTuple (uproot >= 5.7 writes one for ``file[name] = {...}``; the reader reads TTrees only). The message names
what the file holds (name and class) and, where the layout is known, the option that reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["LAYOUTS", "layout_mapping", "missing_tree_message"]

# tree name -> (layout, how to read it)
KNOWN_TREES = {
    "Delphes": ("a Delphes file", "read it with DELPHES_MAPPING (hepzoo run --delphes or --layout delphes)"),
    "Events": ("a CMS NanoAOD file", "read it with NANOAOD_MAPPING (hepzoo run --layout nanoaod)"),
}


def missing_tree_message(path: Path, tree_name: str, classes: dict[str, str], mapping: Any) -> str:
    """One line: no TTree ``tree_name`` in ``path``, what it holds instead, and a hint where one applies."""
    found = classes.get(tree_name, "")
    held = ", ".join(f"{k!r} ({v})" for k, v in sorted(classes.items())) or "nothing"
    if "RNTuple" in found:
        return (
            f"{path}: holds an RNTuple named {tree_name!r}, not a TTree: hepzoo reads TTrees (uproot >= 5.7 writes "
            f"an RNTuple for file[name] = ...; write a TTree with file.mktree(name, types) and tree.extend(arrays))"
        )
    if found:
        return f"{path}: {tree_name!r} is a {found}, not a TTree (the file holds {held})"
    hint = ""
    for name, (what, how) in KNOWN_TREES.items():
        if name != tree_name and classes.get(name, "").startswith("TTree"):
            hint = f"; it looks like {what}: {how}"
            break
    return f"{path}: no TTree {tree_name!r} in the file (it holds {held}){hint}"


LAYOUTS = ("native", "delphes", "nanoaod")


def layout_mapping(name: str):
    """The :class:`~hepzoo.datasets.mapping.BranchMapping` of layout ``name`` (None for ours, ``native``)."""
    if name == "native":
        return None
    if name == "delphes":
        from hepzoo.datasets.mapping import DELPHES_MAPPING

        return DELPHES_MAPPING
    if name == "nanoaod":
        from hepzoo.datasets.nanoaod import NANOAOD_MAPPING

        return NANOAOD_MAPPING
    raise ValueError(f"--layout {name!r}: unknown layout; choose one of {list(LAYOUTS)}")
