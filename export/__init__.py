"""hepzoo.export: ONNX export with parity checks, model cards, zoo releases and Triton repositories (docs/ARCHITECTURE.md)."""
