"""composer: typed YAML pipeline specs → validated DAGs → diagrams, torch modules and verified ONNX."""

from . import runtime  # composer.runtime.Session
from .block import Block, In, Params
from .compile import CompiledPipeline
from .errors import ComposerError, Diagnostic, Location, SpecError
from .export import export  # the function; `from composer.export import ...` still reaches the module
from .generate import Generation, Sampling, TextGenerator, generate  # `generate` is the function, as `export`
from .pipeline import Pipeline, analyze_file, load, loads
from .registry import register
from .types import InferError, PortType
from .weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Block", "In", "Params", "CompiledPipeline", "ComposerError", "Diagnostic", "Location", "SpecError",
    "Pipeline", "analyze_file", "load", "loads", "register", "InferError", "PortType", "__version__",
    "export", "runtime", "load_weights", "save_weights", "generate", "Generation", "Sampling", "TextGenerator",
]
