"""The block catalog: one family per sub-package. Importing it registers every block."""

from . import core, detection, vision  # noqa: F401
