"""Direction finders in W and the DirectionSet artifact they produce (see DESIGN.md)."""

from .direction_set import DirectionSet

__all__ = ["DirectionSet"]
