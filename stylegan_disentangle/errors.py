"""The exception types users catch.

Every error raised at a boundary (a file, a URL, user-supplied arrays) names what was wrong and, where it helps,
how to fix it. Deep library tracebacks are wrapped into one of these.
"""

from __future__ import annotations


class StyleGANDisentangleError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(StyleGANDisentangleError):
    """A network pickle could not be read, is unsafe, or holds something we cannot rebuild."""


class DownloadError(CheckpointError):
    """A checkpoint URL could not be fetched or its checksum did not match."""


class LatentError(StyleGANDisentangleError, ValueError):
    """Latent codes with the wrong shape, or with NaN / inf values."""


class NotFittedError(StyleGANDisentangleError, AttributeError):
    """An estimator was used before `fit`."""


class BuildError(StyleGANDisentangleError, RuntimeError):
    """A CUDA extension in third_party/ could not be compiled."""


class UsageError(StyleGANDisentangleError, ValueError):
    """An argument a user typed (seeds, steps, layer ranges, names) cannot be read."""
