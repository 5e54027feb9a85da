"""ops stage (see DESIGN.md)."""
