"""`positional_encoding`: sinusoidal against the formula written out here at any T, learned tables by
name, `scale_input`, dropout, and located errors. Its ONNX export at two lengths is part of the
series pipeline of test_attention.py."""

from __future__ import annotations

import math

import pytest
import torch

import composer
from blocks.sequence.positional import PositionalEncodingBlock
from composer.dims import sym
from composer.types import InferError, PortType

B, T = sym("B"), sym("T")


def reference_pe(length: int, dim: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)), in float64, element by element."""
    pe = torch.zeros(length, dim, dtype=torch.float64)
    for t in range(length):
        for i in range(dim // 2):
            angle = t / 10000 ** (2 * i / dim)
            pe[t, 2 * i] = math.sin(angle)
            pe[t, 2 * i + 1] = math.cos(angle)
    return pe


def build(d: int = 16, t=T, **params):
    block = PositionalEncodingBlock(**params)
    x = PortType("series", (B, t, d))
    torch.manual_seed(0)
    module = block.build(x=x).eval()
    assert block.param_count(x=x) == sum(p.numel() for p in module.parameters())
    assert block.infer(x=x) == x                                            # a series stays a series
    return module


@pytest.mark.parametrize("length, dim", [(1, 2), (50, 16), (13, 6)])
def test_sinusoidal_matches_the_formula(length, dim):
    module = build(dim)
    x = torch.zeros(3, length, dim)
    with torch.no_grad():
        pe = module(x)
    want = reference_pe(length, dim).float()
    for row in pe:                                                          # the same for every row of the batch
        torch.testing.assert_close(row, want)                               # float32 tolerance
    assert list(module.state_dict()) == []                                 # nothing to store


def test_sinusoidal_adds_to_x_at_any_length_and_scales_it():
    x = torch.randn(2, 300, 8)
    with torch.no_grad():
        plain = build(8)(x)
        scaled = build(8, scale_input=True)(x)
    pe = reference_pe(300, 8).float()
    torch.testing.assert_close(plain, x + pe, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(scaled, x * math.sqrt(8) + pe, atol=2e-5, rtol=1e-5)


def test_learned_table_is_named_position_and_sliced_to_t():
    module = build(8, mode="learned", max_length=10)
    assert list(module.state_dict()) == ["position.weight"]
    table = torch.randn(10, 8)
    module.load_state_dict({"position.weight": table})
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        assert torch.equal(module(x), x + table[:6])
    assert PositionalEncodingBlock(mode="learned", max_length=10).param_count(x=PortType("sequence", (B, 6, 8))) == 80


def test_dropout_only_in_training():
    module = build(8, dropout=0.5)
    x = torch.randn(4, 5, 8)
    with torch.no_grad():
        assert torch.equal(module(x), build(8)(x))
        module.train()
        torch.manual_seed(1)
        y = module(x)
    assert (y == 0).any()


def test_bad_params_and_ports_are_errors():
    with pytest.raises(InferError, match="even feature size") as exc:
        PositionalEncodingBlock().infer(x=PortType("sequence", (B, T, 7)))
    assert exc.value.port == "x"
    PositionalEncodingBlock(mode="learned", max_length=4).infer(x=PortType("sequence", (B, T, 7)))   # any D
    with pytest.raises(InferError, match="needs `max_length`"):
        PositionalEncodingBlock(mode="learned").infer(x=PortType("sequence", (B, T, 8)))
    with pytest.raises(InferError, match="does not apply") as exc:
        PositionalEncodingBlock(max_length=4).infer(x=PortType("sequence", (B, T, 8)))
    assert exc.value.param == "max_length"
    with pytest.raises(InferError, match="longer than the 4 positions") as exc:
        PositionalEncodingBlock(mode="learned", max_length=4).infer(x=PortType("sequence", (B, 5, 8)))
    assert exc.value.param == "max_length"
    with pytest.raises(InferError, match="fixed size"):
        PositionalEncodingBlock().infer(x=PortType("sequence", (B, T, sym("D"))))
    with pytest.raises(InferError, match="rank-3"):
        PositionalEncodingBlock().infer(x=PortType("vector", (B, 8)))
    with pytest.raises(composer.SpecError) as exc:
        composer.loads("""\
pipeline: bad
inputs:
  x: {kind: series, shape: [B, T, 5]}
blocks:
  pe: {block: positional_encoding, in: x}
outputs:
  y: pe
""", file="bad.yaml")
    first = exc.value.diagnostics[0]
    assert first.loc.line == 5 and "even" in first.message
