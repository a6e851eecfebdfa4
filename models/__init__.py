"""hepzoo.models: the model registry, the model families and the models (see docs/ARCHITECTURE.md).

Every module of this package is a candidate model module: the registry imports them all on the first lookup
(``get_spec``, ``list_models``, ``create_model``), and each model module registers its builders with
``@register_model``. Adding a model = one module here + its config in ``configs/``; nothing to list, and the
registry-driven tests pick it up. The families (:mod:`hepzoo.models.families`) import neither torch nor the
registry, so ``from hepzoo.models.families import MLPF`` stays light: this package imports the registry (and
torch) only when one of the names below is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DuplicateModelError",
    "ExportSpec",
    "ModelSpec",
    "TensorSpec",
    "UnknownModelError",
    "create_model",
    "discover",
    "get_spec",
    "list_models",
    "register_model",
    "unregister_model",
]


def __getattr__(name: str) -> Any:  # PEP 562: the registry API, imported on first use
    if name in __all__ or name == "registry":
        registry = importlib.import_module("hepzoo.models.registry")
        return registry if name == "registry" else getattr(registry, name)
    raise AttributeError(f"module 'hepzoo.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
