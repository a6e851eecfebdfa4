"""Export a zoo release to ONNX, check the graph, measure ONNX Runtime vs torch parity, write the card.

``export_release(release)`` builds the release's model (config + weights), exports it with the dynamo
exporter (``torch.onnx.export(..., dynamo=True)``) with the symbolic axes of its ModelSpec, runs
``onnx.checker``, then compares ONNX Runtime (CPU, one intra-op thread) with torch on two input sizes that
differ from the export's dummy size (MLPF: two element counts that are multiples of the element
granularity, and two batch sizes; flash-sim: two batch sizes), on real (unmasked) positions, within the
spec's ``atol``/``rtol``. Only then are ``model.onnx`` and ``card.json`` moved into the release folder:
a failure at any step leaves neither behind (nor a previous pair half-replaced).
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from hepzoo.datasets.atomic import publish, temporary_path
from hepzoo.export.card import (
    CARD,
    ModelCard,
    NoiseInput,
    OnnxFile,
    ParityResult,
    Provenance,
    TensorCard,
    Tolerance,
    artifact_files,
    default_max_elements,
    write_card,
)
from hepzoo.export.buckets import export_buckets
from hepzoo.export.zoo import Release, sha256_of

__all__ = ["ONNX", "ParityError", "export_release", "parity_sizes", "measure_parity"]

ONNX = "model.onnx"
ELEMENTS = "elements"

class ParityError(RuntimeError):
    """ONNX Runtime and torch disagree beyond the export tolerance (the message names the tensor)."""


def _granularity(model: torch.nn.Module, spec) -> int:
    return int(getattr(model, "element_granularity", spec.export.element_granularity))


def _has_elements(spec) -> bool:
    return any(ELEMENTS in t.shape for t in spec.inputs)


def parity_sizes(spec, granularity: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """``(export (batch, n), [check (batch, n), ...])``: checks differ from the export in batch and elements."""
    if not _has_elements(spec):
        return (2, 0), [(1, 0), (67, 0)]
    g = granularity
    if g > 1:
        return (2, 4 * g), [(3, 2 * g), (1, 5 * g)]
    return (2, 48), [(3, 37), (1, 131)]


def _mask_name(spec) -> str | None:
    for t in spec.inputs:
        if t.dtype == "bool" and tuple(t.shape) == ("batch", ELEMENTS):
            return t.name
    return None


def _torch_outputs(model, spec, inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(**inputs)
    out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    return {name: t.numpy() for name, t in zip(spec.output_names, out, strict=True)}


def measure_parity(
    session, model, spec, sizes: list[tuple[int, int]], atol: float, rtol: float, seed: int = 100
) -> list[ParityResult]:
    """Run ``session`` (onnxruntime) and ``model`` on each size; one ParityResult per (size, output)."""
    mask_name = _mask_name(spec)
    results = []
    for batch, n in sizes:
        inputs = spec.export.make_inputs(batch, n, seed + n + batch)
        ref = _torch_outputs(model, spec, inputs)
        got = session.run(list(spec.output_names), {k: v.numpy() for k, v in inputs.items()})
        for t, out in zip(spec.outputs, got, strict=True):
            r = ref[t.name]
            if out.shape != r.shape:
                raise ParityError(f"output {t.name!r} (batch {batch}, n {n}): ONNX shape {out.shape} != torch {r.shape}")
            if mask_name is not None and len(t.shape) >= 2 and t.shape[1] == ELEMENTS:
                keep = inputs[mask_name].numpy()
                out, r = out[keep], r[keep]
            out64, r64 = out.astype(np.float64), r.astype(np.float64)
            diff = np.abs(out64 - r64)
            if not np.isfinite(out64).all() or not np.isfinite(r64).all():
                diff = np.where(np.isnan(out64) & np.isnan(r64), 0.0, np.nan_to_num(diff, nan=np.inf))
            violation = diff - (atol + rtol * np.abs(r64))
            max_diff = float(diff.max()) if diff.size else 0.0
            max_violation = float(violation.max()) if violation.size else -atol
            results.append(
                ParityResult(
                    output=t.name,
                    batch=batch,
                    n_elements=n if _has_elements(spec) else None,
                    max_abs_diff=max_diff,
                    max_violation=max_violation,
                    passed=bool(max_violation <= 0.0),
                )
            )
    return results


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def _tensor_cards(tensors) -> list[TensorCard]:
    return [TensorCard(**t.to_dict()) for t in tensors]


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(model, spec, inputs, opset: int | None, path: Path) -> None:
    with warnings.catch_warnings():
        # raised inside torch's exporter itself (torch 2.13), not by our code
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*The axis name.*will not be used.*", category=UserWarning)
        program = torch.onnx.export(
            model,
            (),
            kwargs=inputs,
            dynamic_shapes=spec.dynamic_shapes(),
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        program.save(str(path))


def export_release(release: Release, opset: int | None = None) -> tuple[Path, ModelCard]:
    """Export ``release`` to ``<release>/model.onnx``, check parity, write ``<release>/card.json``.

    Raises :class:`ParityError` (naming the output tensor, the input size and the max deviation) when ONNX
    Runtime and torch disagree beyond the spec's tolerance; nothing is written in that case.
    """
    import onnx

    from hepzoo.models import get_spec

    config = release.config
    spec = get_spec(config["model"]["name"])
    model = release.build_model()
    g = _granularity(model, spec)
    opset = opset if opset is not None else spec.export.opset
    atol, rtol = spec.export.atol, spec.export.rtol
    (b_export, n_export), checks = parity_sizes(spec, g)

    folder = release.path
    onnx_path, card_path = folder / ONNX, folder / CARD
    # unique temporaries (datasets.atomic naming): concurrent exports never share one, and a killed export's
    # leftovers are recognised by remove_stale_temporaries; the pair is published by the two renames below
    tmp_onnx, tmp_card = temporary_path(onnx_path), temporary_path(card_path)
    moved = False
    try:
        _export(model, spec, spec.export.make_inputs(b_export, n_export, 0), opset, tmp_onnx)
        proto = onnx.load(str(tmp_onnx))
        onnx.checker.check_model(proto)
        graph_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        del proto
        parity = measure_parity(_ort_session(tmp_onnx), model, spec, checks, atol, rtol)
        failed = [p for p in parity if not p.passed]
        if failed:
            worst = max(failed, key=lambda p: p.max_violation)
            size = f"batch {worst.batch}" + (f", {worst.n_elements} elements" if worst.n_elements is not None else "")
            raise ParityError(
                f"{release.name} {release.version}: ONNX Runtime vs torch parity failed for output "
                f"{worst.output!r} at {size}: max |diff| {worst.max_abs_diff:.3g} exceeds atol {atol:g} + "
                f"rtol {rtol:g}*|torch| (by up to {worst.max_violation:.3g}); failing outputs: "
                f"{sorted({p.output for p in failed})}"
            )

        has_elements = _has_elements(spec)
        max_elements = default_max_elements(spec.name) if has_elements else None
        card = ModelCard(
            name=release.name,
            version=release.version,
            family=spec.family.name,
            task=spec.task,
            inputs=_tensor_cards(spec.inputs),
            outputs=_tensor_cards(spec.outputs),
            preprocessing=spec.family.preprocessing,  # the family's texts (hepzoo.models.families)
            postprocessing=spec.family.postprocessing,
            noise_inputs=[
                NoiseInput(name=t.name, shape=list(t.shape)) for t in spec.inputs if t.name in spec.family.noise_inputs
            ],
            element_granularity=g,
            size_buckets=export_buckets(g, max_elements) if has_elements else [],
            provenance=Provenance(
                model=spec.name,
                config=config,
                dataset=release.dataset,
                git_commit=_git_commit(),
                export_date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            ),
            onnx=OnnxFile(file=ONNX, sha256=sha256_of(tmp_onnx), opset=graph_opset, torch_version=torch.__version__),
            files=artifact_files(folder),
            max_elements=max_elements,
            tolerance=Tolerance(atol=atol, rtol=rtol),
            parity=parity,
            metrics=release.metrics,
            thresholds={},
        )
        write_card(card, tmp_card)
        # both files are complete: move them in (model first; the card that describes it last)
        publish(tmp_onnx, onnx_path)
        moved = True
        publish(tmp_card, card_path)
    except BaseException:
        for tmp in (tmp_onnx, tmp_card):
            tmp.unlink(missing_ok=True)
        if moved:  # the new model is in but its card is not: drop both rather than keep a mismatched pair
            onnx_path.unlink(missing_ok=True)
            card_path.unlink(missing_ok=True)
        raise
    return onnx_path, card
