"""How `composer run` shows text results: the cosine similarity of sentence embeddings, and the
likeliest tokens at each [MASK] of a fill-mask model."""

from __future__ import annotations

from typing import Optional

import numpy as np

MASK_TOKENS = ("[MASK]", "<mask>")


def is_unit_rows(value: np.ndarray) -> bool:
    """A batch of L2-normalised vectors (two or more rows): what a sentence-embedding pipeline outputs."""
    if value.ndim != 2 or value.shape[0] < 2 or not np.issubdtype(value.dtype, np.floating):
        return False
    norms = np.linalg.norm(value.astype(np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1.0) < 1e-3))


def similarity_lines(value: np.ndarray, texts: Optional[list[str]] = None) -> list[str]:
    """The cosine similarity matrix of unit rows, one line per row (with its text, shortened)."""
    v = value.astype(np.float64)
    sim = v @ v.T
    n = len(v)
    lines = ["cosine similarity"]
    lines.append("        " + " ".join(f"[{j}]".rjust(6) for j in range(n)))
    for i in range(n):
        label = f"  [{i}]".ljust(8)
        row = " ".join(f"{sim[i, j]:6.3f}" for j in range(n))
        text = f"  {_short(texts[i])}" if texts and i < len(texts) else ""
        lines.append(label + row + text)
    return lines


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def mask_id(tokenizer) -> Optional[int]:
    for t in MASK_TOKENS:
        i = tokenizer.token_to_id(t)
        if i is not None:
            return i
    return None


def fill_mask_lines(logits: np.ndarray, tokens: np.ndarray, tokenizer, top_k: int) -> list[str]:
    """For each [MASK] of each row, the top-k tokens and their probabilities."""
    mid = mask_id(tokenizer)
    if mid is None or logits.ndim != 3 or logits.shape[:2] != tokens.shape:
        return []
    lines = []
    for b, t in zip(*np.nonzero(tokens == mid)):
        scores = logits[b, t].astype(np.float64)
        e = np.exp(scores - scores.max())
        probs = e / e.sum()
        best = np.argsort(-probs)[:top_k]
        items = ", ".join(f"{tokenizer.id_to_token(int(i)) or int(i)} {probs[i]:.3f}" for i in best)
        lines.append(f"  [{b}] [MASK] at {t}: {items}")
    return lines
