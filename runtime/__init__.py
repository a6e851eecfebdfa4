"""hepzoo.runtime: see DESIGN.md."""
