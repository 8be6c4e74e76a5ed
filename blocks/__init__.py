"""The block catalog: one family per sub-package. Importing it registers every block."""

from . import core, detection, generative, graph, sequence, text, vision  # noqa: F401
