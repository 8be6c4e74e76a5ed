"""composer: typed YAML pipeline specs → validated DAGs → diagrams, torch modules and verified ONNX."""

from .block import Block, In, Params
from .compile import CompiledPipeline
from .errors import ComposerError, Diagnostic, Location, SpecError
from .pipeline import Pipeline, analyze_file, load, loads
from .registry import register
from .types import InferError, PortType

__version__ = "0.1.0"

from . import runtime  # noqa: E402  (composer.runtime.Session)
from .export import export  # noqa: E402  (the function; the module stays importable as composer.export)
from .weights import load_weights, save_weights  # noqa: E402

__all__ = [
    "Block", "In", "Params", "CompiledPipeline", "ComposerError", "Diagnostic", "Location", "SpecError",
    "Pipeline", "analyze_file", "load", "loads", "register", "InferError", "PortType", "__version__",
    "export", "runtime", "load_weights", "save_weights",
]
