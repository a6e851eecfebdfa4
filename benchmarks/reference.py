"""The reference to beat in ``hepzoo bench``: jpata/particleflow's own MLPF (PyPI ``particleflow``) at our size.

The ``particleflow`` wheel is installed without its dependencies (they include TensorFlow, Ray, Jupyter and
more; ``mlpf.model`` itself needs only torch, pydantic, pyyaml, psutil and comet_ml)::

    pip install -e '.[bench]' && pip install --no-deps particleflow==3.1.0

Its ``MLPF`` class is built from its own ``MLPFConfig`` with the width, number of layers, LSH bin size,
distance dimension and heads of the zoo release (``zoo/<name>/<version>/config.yaml``), everything else at
particleflow's defaults, and run in PyTorch eager. Differences that stay (they are particleflow's design,
not ours) are listed by :func:`reference_config` under ``notes``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

PACKAGE = "particleflow"
PINNED_VERSION = "3.1.0"
INSTALL_HINT = f"pip install -e '.[bench]' && pip install --no-deps {PACKAGE}=={PINNED_VERSION}"
MAX_ELEMENTS = 32768  # largest element count benchmarked: sizes particleflow's LSH codebook (max_num_bins)

__all__ = ["INSTALL_HINT", "PACKAGE", "available", "build_reference", "reference_config"]


def available() -> tuple[bool, str]:
    """(usable?, why not / version): the package must be installed and ``mlpf.model.mlpf`` importable."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return False, f"{PACKAGE} is not installed ({INSTALL_HINT})"
    try:
        import mlpf.model.mlpf  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure makes the reference unusable
        return False, f"{PACKAGE} {version} is installed but mlpf.model.mlpf does not import ({type(err).__name__}: {err})"
    return True, version


def reference_config(model_name: str, kwargs: Mapping[str, Any], max_elements: int = MAX_ELEMENTS) -> dict[str, Any]:
    """particleflow ``ModelArchitectureConfig`` fields for a zoo MLPF model (registry name + its kwargs).

    Returns ``{"type", "<type>": {...}, "notes": [...]}``; ``notes`` says what cannot be matched.
    """
    from hepzoo.models import get_spec

    if model_name not in ("mlpf-gnnlsh", "mlpf-transformer"):
        raise ValueError(f"no particleflow reference for {model_name!r} (only mlpf-gnnlsh and mlpf-transformer have one)")
    defaults = dict(get_spec(model_name).defaults)
    kw = {**defaults, **dict(kwargs)}
    width, layers = int(kw["width"]), int(kw["num_layers"])
    if model_name == "mlpf-gnnlsh":
        bin_size = int(kw["bin_size"])
        return {
            "type": "gnn_lsh",
            "gnn_lsh": {
                "embedding_dim": width,
                "width": width,
                "num_convs": layers,
                "bin_size": bin_size,
                "distance_dim": int(kw["dist_dim"]),
                # codebook columns = max_num_bins // 2, sliced to n_bins // 2 per event: big enough for every size
                "max_num_bins": max(200, max_elements // bin_size),
                "dropout_ff": 0.0,
            },
            "notes": [
                "particleflow runs two stacks of graph layers (identification and regression), each num_convs deep",
                "particleflow: 2 message-passing steps per layer (num_node_messages) and an LSH code count that grows "
                f"with the number of bins; hepzoo: 1 step and {kw['num_hashes']} hash directions",
            ],
        }
    # mlpf-transformer
    heads = int(kw["num_heads"])
    if width % heads:
        raise ValueError(f"{model_name}: width {width} is not divisible by num_heads {heads}")
    return {
        "type": "attention",
        "attention": {
            "num_heads": heads,
            "head_dim": width // heads,
            "num_convs": layers,
            # particleflow's default; on CPU torch runs its flash-attention CPU kernel (no N x N matrix)
            "attention_type": "flash",
            "dropout_conv_id_mha": 0.0,
            "dropout_conv_id_ff": 0.0,
            "dropout_conv_reg_mha": 0.0,
            "dropout_conv_reg_ff": 0.0,
            "dropout_ff": 0.0,
        },
        "notes": [
            "particleflow runs two stacks of attention layers (identification and regression), each num_convs deep",
            f"particleflow's feed-forward width equals the embedding ({width}); hepzoo's is {kw['ffn_mult']} x {width}",
        ],
    }


def build_reference(model_name: str, kwargs: Mapping[str, Any], seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """particleflow's ``MLPF`` at the size of a zoo release, in eval mode, seeded random weights.

    The weights are random (seeded): the compute cost does not depend on their values. Inputs are hepzoo's
    element features (``ElementFeature``: type, pt, eta, sin_phi, cos_phi, e first, as particleflow expects).
    """
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    import torch
    from mlpf.conf import MLPFConfig
    from mlpf.model.mlpf import MLPF

    from hepzoo.datasets import schema

    arch = reference_config(model_name, kwargs)
    notes = arch.pop("notes")
    config = MLPFConfig(
        dataset="clic",  # a required field; the dimensions below override what it implies
        data_dir=".",
        model=arch,
        conv_type=arch["type"],
        input_dim=len(schema.ElementFeature),
        num_classes=len(schema.TargetClass),
        elemtypes_nonzero=[int(t) for t in schema.ElementType],
    )
    logging.getLogger("mlpf").setLevel(logging.WARNING)  # its constructor logs every layer at INFO
    torch.manual_seed(seed)
    model = MLPF(config).eval()
    info = {
        "package": PACKAGE,
        "version": why,
        "class": "mlpf.model.mlpf.MLPF",
        "architecture": config.model.model_dump(mode="json", exclude_none=True),
        "input_dim": config.input_dim,
        "num_classes": config.num_classes,
        "elemtypes_nonzero": config.elemtypes_nonzero,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "weights": f"random, torch.manual_seed({seed})",
        "notes": notes,
    }
    return model, info
