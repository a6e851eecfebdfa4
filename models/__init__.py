"""hepzoo.models: see DESIGN.md."""
