"""stylegan_disentangle: safe official-checkpoint loading, a faithful StyleGAN2 generator, and W-space disentanglement.

The public API is re-exported here; see README.md for a quick start.
"""

__version__ = "0.1.0"
