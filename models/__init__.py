"""hepzoo.models: the model registry and the model families (see DESIGN.md).

Importing this package registers every model: each model module below registers its builders with
``@register_model``. Adding a model = one module here + its import below; the test matrix picks it up.
"""

from hepzoo.models import registry
from hepzoo.models.registry import (
    DuplicateModelError,
    ExportSpec,
    ModelSpec,
    TensorSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    register_model,
    unregister_model,
)

# model modules (import order = nothing; each registers its own names)
from hepzoo.models import flashsim_jet, flashsim_track, mlpf_gnnlsh, mlpf_transformer  # noqa: E402,F401  isort: skip

__all__ = list(registry.__all__)
