"""Text blocks: tokenizer, embeddings, the transformer encoder (shared with vision), pooling and heads."""

from . import decoder, embedding, encoder, heads, pooling, tokenizer  # noqa: F401
