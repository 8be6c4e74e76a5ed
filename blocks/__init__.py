"""The block catalog: one family per sub-package. Importing it registers every block."""

from . import core, detection, graph, sequence, text, vision  # noqa: F401
