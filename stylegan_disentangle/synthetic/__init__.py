"""synthetic stage (see DESIGN.md)."""
