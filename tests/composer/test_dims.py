from __future__ import annotations

import pytest

from composer.dims import DimSyntaxError, ceildiv, conv_out, evaluate, floordiv, format_dim, parse_dim, sym


@pytest.mark.parametrize("h", range(1, 70))
def test_conv_out_matches_torch_formula(h):
    H = sym("H")
    for k, s, p, d in [(3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1), (2, 2, 0, 1), (5, 3, 2, 2), (1, 2, 0, 1)]:
        expected = (h + 2 * p - d * (k - 1) - 1) // s + 1
        if expected < 1:
            continue
        assert evaluate(conv_out(H, k, s, p, d), {"H": h}) == expected
        assert conv_out(h, k, s, p, d) == expected


def test_normal_forms_unify():
    H = sym("H")
    assert conv_out(conv_out(H, 7, 2, 3), 3, 2, 1) == ceildiv(H, 4)
    assert format_dim(ceildiv(H, 4)) == "ceil(H/4)"
    assert floordiv(H, 2) + 1 == floordiv(H + 2, 2)
    assert conv_out(H, 3, 1, 1) == H


def test_multiple_of_simplifies_exactly():
    H = sym("H", 32)
    c5 = H
    for k, s, p in [(7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1)]:
        c5 = conv_out(c5, k, s, p)
    assert c5 == H / 32
    assert format_dim(c5) == "H/32"
    assert evaluate(c5, {"H": 224}) == 7


def test_parse_and_format():
    assert format_dim(parse_dim("(H-3)//2+1")) == "floor((H-1)/2)"
    assert format_dim(parse_dim("ceil(H/32)")) == "ceil(H/32)"
    assert format_dim(parse_dim("C*H*W")) == "C*H*W"
    assert parse_dim("H/8", {"H": 32}) == sym("H", 32) / 8
    assert parse_dim(7) == 7
    for bad in ("H +", "H/0", "import os", "H ** 2", "f(H)", "H/W"):
        with pytest.raises(DimSyntaxError):
            parse_dim(bad)


def test_products_and_evaluation():
    H, W = sym("H"), sym("W")
    flat = 64 * H * W
    assert format_dim(flat) == "64*H*W"
    assert evaluate(flat, {"H": 3, "W": 5}) == 960
    assert H - H == 0
