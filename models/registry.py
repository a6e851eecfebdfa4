"""Model registry (timm style): thin keyword-only builders, each with a :class:`ModelSpec`.

Register a model with one decorator on its builder::

    @register_model("mlpf-gnnlsh", family="mlpf", task="...", inputs=..., outputs=..., export=...)
    def mlpf_gnnlsh(*, width: int = 64, num_layers: int = 3) -> nn.Module: ...

* every builder parameter must be keyword-only with a default: those defaults are the spec's
  ``defaults`` (the default hyper-parameters), and ``create_model(name, **overrides)`` calls the builder
  with them, overridden;
* registering a name twice raises :class:`DuplicateModelError`; an unknown name raises
  :class:`UnknownModelError` listing the registered names; an unknown override raises ``TypeError``
  listing the valid ones;
* every module of the ``hepzoo.models`` package is imported on the first lookup (:func:`get_spec`,
  :func:`list_models`, :func:`create_model`), so a model module registers itself by being in the package:
  adding a model is one file here plus its config; the test matrix in ``tests/test_models.py`` is driven by
  :func:`list_models`;
* ``family`` is a registered :class:`~hepzoo.models.families.Family` (pass it or its name); ``spec.family`` is
  the Family object (a ``str`` equal to its name).

The spec is what export, cards and the runtime read: tensor names, dtypes, shapes with symbolic axes
(``"batch"``, ``"elements"``) and feature names in order (taken from the schema enums), a dummy-input
generator for export, the element-count granularity (a dynamic axis that must be a multiple of N, e.g. the
GNN-LSH bin size) and the ONNX-vs-torch parity tolerance.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from hepzoo.models.families import Family, UnknownFamilyError, get_family

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

Axis = str | int


class DuplicateModelError(ValueError):
    """A model name was registered twice."""


class UnknownModelError(KeyError):
    """No model of that name is registered (the message lists the registered names)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: ``shape`` uses strings for symbolic (dynamic) axes and ints for fixed ones.

    ``feature_names`` names the entries of the last axis in order (or None when it has no named features).
    """

    name: str
    dtype: str  # torch/numpy dtype name: "float32", "bool", "int64"
    shape: tuple[Axis, ...]
    feature_names: tuple[str, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.feature_names is not None:
            last = self.shape[-1]
            if not isinstance(last, int) or last != len(self.feature_names):
                raise ValueError(
                    f"tensor {self.name!r}: last axis {last!r} does not match {len(self.feature_names)} feature names"
                )

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "doc": self.doc,
        }


@dataclass(frozen=True)
class ExportSpec:
    """What an exporter needs.

    ``make_inputs(batch, n_elements, seed)`` returns dummy inputs keyed by input name (valid for any
    ``n_elements`` that is a multiple of ``element_granularity``); ``atol``/``rtol`` bound the
    ONNX-vs-torch difference on real (unmasked) positions.
    """

    make_inputs: Callable[[int, int, int], dict[str, torch.Tensor]]
    element_granularity: int = 1
    atol: float = 1e-4
    rtol: float = 1e-4
    opset: int | None = None  # None: the exporter's default (opset 23 breaks SDPA masks in ORT 1.32)

    def __post_init__(self) -> None:
        if self.element_granularity < 1:
            raise ValueError("element_granularity must be >= 1")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    task: str
    builder: Callable[..., torch.nn.Module] = field(repr=False)
    defaults: Mapping[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    export: ExportSpec
    # Largest fraction of real elements whose outputs may change under a permutation of the elements
    # (0.0: exactly equivariant; None: not meant to be equivariant, or no element axis).
    permutation_tolerance: float | None = 0.0
    doc: str = ""

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def make_inputs(self, batch: int, n_elements: int, seed: int = 0) -> dict[str, torch.Tensor]:
        g = self.export.element_granularity
        if n_elements % g:
            raise ValueError(f"{self.name}: n_elements={n_elements} is not a multiple of {g}")
        return self.export.make_inputs(batch, n_elements, seed)

    def dynamic_shapes(self) -> dict[str, dict[int, str]]:
        """Dynamic shapes for ``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``: every symbolic axis
        of every input, by its name (``{"features": {0: "batch", 1: "elements"}, ...}``).

        Axes with the same name are the same dimension; the exporter keeps the names in the ONNX graph. A
        granularity > 1 (GNN-LSH bins) is inferred by ``torch.export`` from the model's reshape and recorded
        as a constraint; the exported graph then fails (ORT Reshape error) for element counts that are not
        multiples of it, so callers pad to ``export.element_granularity`` first.
        """
        return {
            t.name: {i: ax for i, ax in enumerate(t.shape) if isinstance(ax, str)} for t in self.inputs
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata (for model cards)."""
        return {
            "name": self.name,
            "family": self.family.name,
            "task": self.task,
            "defaults": dict(self.defaults),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "element_granularity": self.export.element_granularity,
            "export_tolerance": {"atol": self.export.atol, "rtol": self.export.rtol},
            "opset": self.export.opset,
            "permutation_tolerance": self.permutation_tolerance,
        }


_REGISTRY: dict[str, ModelSpec] = {}
_discovered = False


def discover() -> None:
    """Import every module of the ``hepzoo.models`` package once (each model module registers its builders)."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # set first: a model module that looks a model up while being imported does not recurse
    try:
        package = importlib.import_module("hepzoo.models")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"hepzoo.models.{info.name}")
    except BaseException:
        _discovered = False  # a broken model module fails every lookup, not only the first
        raise


def _builder_defaults(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TypeError(
                f"builder of {name!r}: parameter {p.name!r} must be keyword-only with a default "
                f"(write `def {fn.__name__}(*, {p.name}=...)`)"
            )
        defaults[p.name] = p.default
    return defaults


def register_model(
    name: str,
    *,
    family: str | Family,
    task: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    export: ExportSpec,
    permutation_tolerance: float | None = 0.0,
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator registering a builder under ``name`` (see the module docstring). Returns the builder unchanged."""
    try:
        family = get_family(family)
    except UnknownFamilyError as err:
        raise UnknownFamilyError(f"model {name!r}: {err}") from None

    def deco(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _REGISTRY:
            raise DuplicateModelError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        spec = ModelSpec(
            name=name,
            family=family,
            task=task,
            builder=fn,
            defaults=MappingProxyType(_builder_defaults(name, fn)),
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            export=export,
            permutation_tolerance=permutation_tolerance,
            doc=inspect.getdoc(fn) or "",
        )
        _REGISTRY[name] = spec
        return fn

    return deco


def unregister_model(name: str) -> None:
    """Remove a registration (for tests and plugins that re-register)."""
    get_spec(name)
    del _REGISTRY[name]


def list_models(family: str | None = None) -> list[str]:
    """Sorted registered names, optionally of one family."""
    discover()
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def get_spec(name: str) -> ModelSpec:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models()) or '(none)'}"
        ) from None


def create_model(name: str, **overrides: Any) -> torch.nn.Module:
    """Build model ``name`` with its default hyper-parameters, updated by ``overrides``."""
    spec = get_spec(name)
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise TypeError(
            f"model {name!r} has no hyper-parameter(s) {unknown}; valid: {sorted(spec.defaults)}"
        )
    return spec.builder(**{**spec.defaults, **overrides})
