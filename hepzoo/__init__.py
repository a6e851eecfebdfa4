"""hepzoo: model zoo of fast-simulation and MLPF networks with a batched inference runtime."""

__version__ = "0.1.0"
