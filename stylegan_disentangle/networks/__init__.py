"""networks stage (see DESIGN.md)."""
