"""hepzoo.validation: physics metrics, the CI gate, reports, the demo, the MLPF diagnosis and working point (docs/ARCHITECTURE.md)."""
