"""Text blocks: tokenizer, embeddings, the transformer encoder (shared with vision), pooling and heads."""

from . import decoder, embedding, encoder, heads, pooling, t5, tokenizer, xlnet  # noqa: F401
