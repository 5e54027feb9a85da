"""labels stage (see DESIGN.md)."""
