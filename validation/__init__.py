"""hepzoo.validation: see DESIGN.md."""
