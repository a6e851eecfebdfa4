"""hepzoo.export: see DESIGN.md."""
