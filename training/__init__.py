"""hepzoo.training: see DESIGN.md."""
