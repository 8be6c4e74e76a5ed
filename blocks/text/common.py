"""What the text blocks share: the `weight` kind (a tied matrix on a port), id checks and BERT's init."""

from __future__ import annotations

from torch import nn

from composer.types import InferError, PortType, expect_rank, register_kind

# A parameter matrix passed along the DAG, so a tie is an edge of the spec (an MLM head decoding
# with the embedding's word table) and the state dict holds one copy of it.
register_kind("weight", "tensor")

INT_DTYPES = ("int64", "int32")
INIT_STD = 0.02   # BERT's initializer_range


def expect_ids(t: PortType, port: str) -> None:
    """A [B, T] tensor of integer ids on `port`."""
    expect_rank(t, 2, port, " [B, T] of ids")
    if t.dtype not in INT_DTYPES:
        raise InferError(f"port `{port}` needs integer ids, but its input is {t.dtype}", port=port, code="E303",
                         expected="int64 (or int32)", found=t.dtype,
                         hint="declare the input with `dtype: int64`; float features go through `dense`, "
                              "not an embedding")


def init_like_bert(module: nn.Module, std: float = INIT_STD) -> nn.Module:
    """BERT's initialisation: Linear and Embedding weights N(0, std), zero biases and padding rows,
    LayerNorm 1 and 0 (nn defaults give embeddings N(0, 1), far too large next to a LayerNorm)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if m.padding_idx is not None:
                nn.init.zeros_(m.weight[m.padding_idx])
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
