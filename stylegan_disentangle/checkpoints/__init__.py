"""checkpoints stage (see DESIGN.md)."""
