"""Text blocks: tokenizer, embeddings, the transformer encoder (shared with vision), pooling and heads."""

from . import encoder  # noqa: F401
from . import embedding, heads, pooling  # noqa: F401
from . import tokenizer  # noqa: F401
