"""composer: typed YAML pipeline specs → validated DAGs → diagrams, torch modules and verified ONNX."""

from .block import Block, In, Params
from .compile import CompiledPipeline
from .errors import ComposerError, Diagnostic, Location, SpecError
from .pipeline import Pipeline, analyze_file, load, loads
from .registry import register
from .types import InferError, PortType

__version__ = "0.1.0"

__all__ = [
    "Block", "In", "Params", "CompiledPipeline", "ComposerError", "Diagnostic", "Location", "SpecError",
    "Pipeline", "analyze_file", "load", "loads", "register", "InferError", "PortType", "__version__",
]
