"""latents stage (see DESIGN.md)."""
