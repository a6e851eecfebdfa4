"""The Triton model repository written from a card: parsed with Triton's own ModelConfig schema and checked
against the card and the ONNX graph, for every release."""

from __future__ import annotations

import importlib.util
import json
import shutil

import onnx
import pytest
from google.protobuf import text_format
from typer.testing import CliRunner

from hepzoo.cli import app
from hepzoo.export.card import load_card
from hepzoo.export.triton import CONFIG, TRITON_DTYPES, write_triton_repository
from hepzoo.export.zoo import list_releases, sha256_of

RELEASES = [r for r in list_releases() if (r.path / "card.json").is_file()]


def _model_config_class():
    """Triton's ModelConfig message (tritonclient ships the generated module; import it without grpc)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (pip install -e '.[dev]')")
    path = spec.submodule_search_locations[0] + "/grpc/model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig, module.DataType


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_config_matches_card_and_graph(release, tmp_path):
    ModelConfig, DataType = _model_config_class()
    folder = write_triton_repository(release.path, tmp_path, max_batch_size=32)
    card = load_card(release.path)
    config = text_format.Parse((folder / CONFIG).read_text(), ModelConfig())  # raises on any unknown field
    assert config.name == card.name == folder.name
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert max(config.dynamic_batching.preferred_batch_size) <= 32
    graph = onnx.load(folder / card.version / "model.onnx").graph
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        for v in (*graph.input, *graph.output)
    }
    for entries, tensors in ((config.input, card.inputs), (config.output, card.outputs)):
        assert [e.name for e in entries] == [t.name for t in tensors]
        for entry, tensor in zip(entries, tensors, strict=True):
            assert DataType.Name(entry.data_type) == TRITON_DTYPES[tensor.dtype]
            dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
            assert dims == shapes[tensor.name][1:]  # batch axis is Triton's, the rest as in the graph
            assert len(entry.dims) >= 1
            assert shapes[tensor.name][0] == -1
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["hepzoo_onnx_sha256"] == card.onnx.sha256 == sha256_of(folder / card.version / "model.onnx")
    assert params["hepzoo_size_buckets"] == ",".join(map(str, card.size_buckets))
    assert json.loads((folder / "card.json").read_text())["name"] == card.name


def test_rewrite_replaces_and_bad_release_refused(tmp_path):
    release = RELEASES[0]
    first = write_triton_repository(release.path, tmp_path / "repo")
    (first / "stale.txt").write_text("old")
    again = write_triton_repository(release.path, tmp_path / "repo", max_batch_size=8)
    assert again == first and not (again / "stale.txt").exists() and "max_batch_size: 8" in (again / CONFIG).read_text()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [release.name]  # no staging left behind
    tampered = tmp_path / "tampered"
    shutil.copytree(release.path, tampered, ignore=shutil.ignore_patterns("weights.pt", "*.jsonl"))
    with open(tampered / "model.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        write_triton_repository(tampered, tmp_path / "repo2")
    assert not (tmp_path / "repo2" / release.name).exists()


def test_cli_export_triton(tmp_path):
    result = CliRunner().invoke(app, ["export", "flashsim-jet", "--triton", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flashsim-jet" / CONFIG).is_file() and (tmp_path / "flashsim-jet" / "1" / "model.onnx").is_file()
