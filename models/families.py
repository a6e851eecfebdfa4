"""Model families and flash-sim object kinds: what every layer needs to know about a kind of model, in one place.

A :class:`Family` (``MLPF``, ``FLASHSIM``) says

* what a model reads and writes: the input collections and event scalars of an event file, how events become
  tensors (``encode``) and tensors become objects (``decode``: the ONE decoder of the family), and the
  collection of a ``hepzoo run`` output; a family with object kinds (flash-sim: jet, track) says this per kind
  (:class:`ObjectKind`, chosen by the training config's ``data.kind``);
* whether it is generative (``generative``: noise inputs filled from a seed, so a run needs a seed) and whether
  its inputs are ragged element rows (``elements``: size buckets, a per-event element limit, ``run_elements``);
* how export and the card treat it (``preprocessing``/``postprocessing`` texts, ``noise_inputs``);
* which training task trains it (``training_task``), which physics figures a tuning run tracks
  (``training_metrics``) and which metrics, gate quantities, plots and report sections validate it
  (``validation``).

Layers import one way (datasets -> models -> training/export -> runtime -> validation -> CLI), so what lives in a
higher layer is named by a lazy reference, ``Ref("hepzoo.training.tasks:MLPFTask")``, imported on first use.
This module imports neither torch nor any other hepzoo layer at import time: the runtime may use it.

A ``Family`` is a ``str`` (its name): cards, configs and metrics files keep storing the plain name, and
``spec.family == "mlpf"`` still holds, but code reads behaviour from the attributes, never by comparing names.
``register_model(..., family="mlpf")`` resolves the name with :func:`get_family`.

Adding a flash-sim object kind: its table, reconstruction and a ``KindTables`` record in
``hepzoo.datasets.flashsim_data.KINDS`` (the data side), and one :class:`ObjectKind` entry below.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "FLASHSIM",
    "MLPF",
    "Family",
    "ObjectKind",
    "Ref",
    "UnknownFamilyError",
    "UnknownKindError",
    "families",
    "family_names",
    "get_family",
    "kind_names",
    "register_family",
]

_UNSET = object()


class Ref:
    """A lazy reference ``"package.module:attribute"`` (dots after the colon walk attributes), imported on first
    use and cached. Calling a Ref calls what it names; its other attributes are those of what it names."""

    __slots__ = ("target", "_value")

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"Ref {target!r}: expected 'package.module:attribute'")
        self.target = target
        self._value: Any = _UNSET

    def resolve(self) -> Any:
        if self._value is _UNSET:
            module, _, attr = self.target.partition(":")
            value: Any = importlib.import_module(module)
            for part in attr.split("."):
                value = getattr(value, part)
            self._value = value
        return self._value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # attributes of what it names (``family.validation.measure``)
        if name.startswith("__") or name in Ref.__slots__:
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"Ref({self.target!r})"


def _ref(target: str | Ref | None) -> Ref | None:
    return Ref(target) if isinstance(target, str) else target


class UnknownFamilyError(ValueError):
    """No model family of that name (the message lists the registered ones)."""


class UnknownKindError(ValueError):
    """No object kind of that name in a family (the message lists the family's kinds)."""


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object a flash-sim model simulates (``jet``, ``track``): the ``data.kind`` of its config.

    ``output_collection``: the collection a ``hepzoo run`` output holds; ``demo_response``: the target column
    ``hepzoo demo`` plots as the matched-object response (None: no plot). The data side (object table, what the
    context reads, reconstruction, column names) is ``hepzoo.datasets.flashsim_data.KINDS[name]``, read on first
    use (that module imports torch).
    """

    name: str
    output_collection: str
    demo_response: str | None = None
    doc: str = ""

    @property
    def tables(self) -> Any:
        """The ``KindTables`` record of :mod:`hepzoo.datasets.flashsim_data` for this kind."""
        from hepzoo.datasets import flashsim_data

        return flashsim_data.KINDS[self.name]

    @property
    def input_collections(self) -> tuple[str, ...]:
        """The collections the context reads (what a run on generator-level files needs)."""
        return tuple(self.tables.context_collections)

    @property
    def input_scalars(self) -> tuple[str, ...]:
        """The event scalars the context reads (checked against the value policy with the collections)."""
        return tuple(self.tables.context_scalars)

    @property
    def context_names(self) -> tuple[str, ...]:
        return tuple(self.tables.context_names)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.tables.target_names)

    def encode(self, events: Any) -> dict:
        """Events -> the object table (``context``, ``matched``, ``target``, ``event_index``)."""
        return self.tables.table(events)

    def decode(self, context: Any, sample: Any) -> dict:
        """Context rows + sampled targets -> reconstructed objects in physical units (``hepzoo run``'s columns)."""
        return self.tables.reconstruct(context, sample)


class Family(str):
    """A model family; a ``str`` equal to its name (see the module docstring). Build one per family with
    keyword arguments and :func:`register_family` it; the attributes are read-only."""

    label: str
    doc: str
    generative: bool
    elements: bool
    kinds: Mapping[str, ObjectKind]
    input_collections: tuple[str, ...]
    input_scalars: tuple[str, ...]
    output_collection: str | None
    noise_inputs: tuple[str, ...]
    preprocessing: str
    postprocessing: str
    encode: Ref | None
    decode: Ref | None
    training_task: Ref
    training_metrics: Ref | None
    validation: Ref
    reference_implementation: str | None

    def __new__(
        cls,
        name: str,
        *,
        label: str,
        doc: str,
        training_task: str | Ref,
        validation: str | Ref,
        preprocessing: str,
        postprocessing: str,
        generative: bool = False,
        elements: bool = False,
        kinds: Iterable[ObjectKind] = (),
        input_collections: tuple[str, ...] = (),
        input_scalars: tuple[str, ...] = (),
        output_collection: str | None = None,
        noise_inputs: tuple[str, ...] = (),
        encode: str | Ref | None = None,
        decode: str | Ref | None = None,
        training_metrics: str | Ref | None = None,
        reference_implementation: str | None = None,
    ) -> Family:
        self = super().__new__(cls, name)
        kinds = tuple(kinds)
        if kinds and (input_collections or output_collection or encode or decode):
            raise ValueError(f"family {name!r}: with object kinds, the kinds say what a model reads and writes")
        if not kinds and output_collection is None:
            raise ValueError(f"family {name!r}: give output_collection (or object kinds)")
        attrs = {
            "label": label,
            "doc": doc,
            "generative": bool(generative),
            "elements": bool(elements),
            "kinds": MappingProxyType({k.name: k for k in kinds}),
            "input_collections": tuple(input_collections),
            "input_scalars": tuple(input_scalars),
            "output_collection": output_collection,
            "noise_inputs": tuple(noise_inputs),
            "preprocessing": preprocessing,
            "postprocessing": postprocessing,
            "encode": _ref(encode),
            "decode": _ref(decode),
            "training_task": _ref(training_task),
            "training_metrics": _ref(training_metrics),
            "validation": _ref(validation),
            "reference_implementation": reference_implementation,
        }
        for key, value in attrs.items():
            object.__setattr__(self, key, value)
        return self

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"family {str(self)!r} is read-only")

    def __reduce__(self) -> tuple:  # pickles (DDP, data-loader workers) as a lookup of the registered family
        return get_family, (str(self),)

    @property
    def name(self) -> str:
        """The plain name (a ``str``, not the Family)."""
        return str.__str__(self)

    def object_kind(self, name: str) -> ObjectKind:
        """The object kind ``name`` of this family; an error lists the family's kinds."""
        try:
            return self.kinds[name]
        except (KeyError, TypeError):
            known = ", ".join(self.kinds) or "(none)"
            raise UnknownKindError(f"{self.label} has no object kind {name!r}; kinds: {known}") from None

    def objects(self, config: Mapping[str, Any]) -> ObjectKind | Family:
        """What a model of this family with training config ``config`` reads and writes: the object kind its
        ``data.kind`` names, or the family itself when it has no kinds. Either has ``input_collections``,
        ``input_scalars``, ``output_collection``, ``encode`` and ``decode``."""
        if not self.kinds:
            return self
        return self.object_kind((config.get("data") or {}).get("kind"))


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str | Family) -> Family:
    """The registered family ``name`` (a Family is returned as is); an error lists the registered families."""
    if isinstance(name, Family):
        return name
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown model family {name!r}; registered families: {', '.join(_FAMILIES) or '(none)'}"
        ) from None


def families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def kind_names() -> tuple[str, ...]:
    """The object kinds of every family (a flash-sim config's ``data.kind`` values), in registration order."""
    return tuple(k for f in _FAMILIES.values() for k in f.kinds)


# ---- the families -----------------------------------------------------------------------------------------------

MLPF = register_family(
    Family(
        "mlpf",
        label="MLPF",
        doc="machine-learned particle flow: tracks and clusters of an event -> one particle candidate per element",
        elements=True,
        input_collections=("trk", "clu"),
        output_collection="mlpf",
        encode="hepzoo.datasets.elements:element_features",
        decode="hepzoo.models.mlpf_decode:decode_candidates",
        training_task="hepzoo.training.tasks:MLPFTask",
        training_metrics="hepzoo.validation.mlpf:physics_metrics",
        validation="hepzoo.validation.families:MLPF_VALIDATION",
        reference_implementation="particleflow",  # what `hepzoo bench` compares the family's releases with
        preprocessing=(
            "none outside the graph: feed raw physical element features in schema.ElementFeature order "
            "(tracks then clusters) with a bool padding mask; the fixed input transform (log/asinh/scale per "
            "feature, one-hot of the element type) is embedded in the graph. Pad the element axis to a size "
            "bucket that is a multiple of element_granularity."
        ),
        postprocessing=(
            "per element: cls_logits and charge_logits are logits (softmax/argmax outside the graph); regression "
            "is decoded to physical units inside the graph. Discard padded positions (mask False)."
        ),
    )
)

FLASHSIM = register_family(
    Family(
        "flashsim",
        label="flash-sim",
        doc="flash simulation: generator objects -> reconstructed objects (efficiency + a conditional flow sample)",
        generative=True,
        kinds=(
            ObjectKind("jet", output_collection="flashjet", demo_response="pt_response",
                       doc="reconstructed (PF) jets from generator jets"),
            ObjectKind("track", output_collection="flashtrk",
                       doc="reconstructed tracks from charged generator particles"),
        ),  # fmt: skip
        noise_inputs=("noise",),
        training_task="hepzoo.training.tasks:FlashSimTask",
        validation="hepzoo.validation.families:FLASHSIM_VALIDATION",
        preprocessing=(
            "none outside the graph: feed raw generator-level context columns in the card's feature order; the "
            "context/target normalisation constants are buffers embedded in the graph. Fill the noise inputs "
            "with standard-normal numbers from a seeded generator."
        ),
        postprocessing=(
            "sample is in physical units (target normalisation undone in the graph, discrete columns rounded); "
            "efficiency is a probability in [0, 1]: keep a row as reconstructed with a uniform draw < efficiency."
        ),
    )
)
