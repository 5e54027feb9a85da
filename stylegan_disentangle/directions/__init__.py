"""directions stage (see DESIGN.md)."""
