"""Core blocks: dense layers, activations, normalisation, convolution, pooling, merges."""

from . import activations, conv, linear, merge, norm, pool, shape  # noqa: F401
