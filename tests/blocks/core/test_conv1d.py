"""The 1-D core blocks: `conv1d` (plain, "same", causal) and the 1-D pools against torch, masked
global pooling against pooling the cut sequence, `transpose`'s kinds, symbolic shape inference, an ONNX
export at two lengths, and the layout error of a [B, T, C] sequence fed to a channels-first block."""

from __future__ import annotations

import math
import subprocess

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import composer
from blocks.core.conv import Conv1d, Conv1dPad
from blocks.core.pool import AvgPool1d, GlobalAvgPool1d, GlobalMaxPool1d, MaxPool1d
from blocks.core.shape import Transpose
from composer.dims import evaluate, format_dim, shape_str, sym
from composer.types import InferError, PortType
from tests.conftest import COMPOSER

B, T = sym("B"), sym("T")


def signal(c: int = 4, t=T) -> PortType:
    return PortType("signal", (B, c, t))


def run(block, x: torch.Tensor, t=T, mask=None):
    """Build `block` for a signal input of length `t` (symbolic by default) and run it in eval mode."""
    kw = {"x": signal(x.shape[1], t)}
    if mask is not None:
        kw["mask"] = PortType("mask", (B, t), "int64")
    module = block.build(**kw).eval()
    with torch.no_grad():
        return (module(x) if mask is None else module(x, mask)), module


def out_len(block, t: int, symbolic: bool = True) -> int:
    """The inferred output length at length t (from the symbolic type, evaluated, or a static one)."""
    got = block.infer(x=signal(4, T if symbolic else t)).shape[2]
    return evaluate(got, {"T": t, "B": 2})


# ---- conv1d ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(kernel=3), dict(kernel=5, stride=2, padding=2), dict(kernel=3, dilation=2, padding=1),
                                dict(kernel=1, bias=False), dict(kernel=3, groups=2, padding=1)])
def test_conv1d_matches_torch_with_the_same_weights(kw):
    block = Conv1d(out_channels=6, **kw)
    x = torch.randn(2, 4, 11)
    got, module = run(block, x)
    ref = nn.Conv1d(4, 6, kw["kernel"], kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                    kw.get("groups", 1), kw.get("bias", True))
    ref.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(got, ref(x), rtol=0, atol=0)
    assert block.param_count(x=signal()) == sum(p.numel() for p in ref.parameters())
    assert got.shape[2] == out_len(block, 11)


def _tf_same(x: torch.Tensor, conv: nn.Conv1d, k: int, s: int, d: int) -> torch.Tensor:
    """TensorFlow "same": output ceil(T/s), padding total max((ceil(T/s)-1)*s + (k-1)*d + 1 - T, 0), extra on the right."""
    n = x.shape[-1]
    total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return F.conv1d(F.pad(x, (total // 2, total - total // 2)), conv.weight, conv.bias, s, 0, d)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), (3, 2), (1, 1)])
@pytest.mark.parametrize("n", [8, 9])
def test_same_padding_gives_ceil_length_and_tf_values(stride, kernel, dilation, n):
    block = Conv1d(out_channels=3, kernel=kernel, stride=stride, dilation=dilation, padding="same")
    x = torch.randn(2, 4, n)
    assert out_len(block, n) == math.ceil(n / stride) == out_len(block, n, symbolic=False)
    for t in (T, n):                       # built for any length (runtime padding) and for this one
        got, module = run(block, x, t)
        assert got.shape == (2, 3, math.ceil(n / stride))
        with torch.no_grad():
            torch.testing.assert_close(got, _tf_same(x, module, kernel, stride, dilation), rtol=0, atol=1e-6)
        plain = nn.Conv1d(4, 3, kernel, stride, 0, dilation)
        plain.load_state_dict(module.state_dict())   # the keys of a plain conv, whichever module it is
    if stride == 1 and kernel % 2:          # symmetric: torch's own "same"
        ref = nn.Conv1d(4, 3, kernel, 1, "same", dilation)
        ref.load_state_dict(module.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(got, ref(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_causal_output_never_sees_the_future(stride):
    block = Conv1d(out_channels=5, kernel=3, dilation=2, stride=stride, padding="causal")
    n = 16
    x = torch.randn(2, 4, n)
    out, module = run(block, x)
    assert isinstance(module, Conv1dPad) and module.pad == (4, 0)
    assert out.shape[2] == math.ceil(n / stride) == out_len(block, n)
    with torch.no_grad():
        torch.testing.assert_close(out, F.conv1d(F.pad(x, (4, 0)), module.weight, module.bias, stride, 0, 2))
        for t0 in range(n):                           # change every step from t0 on: outputs at times < t0 stay
            y = x.clone()
            y[..., t0:] = torch.randn_like(y[..., t0:]) * 100
            changed = module(y)
            seen = [i for i in range(out.shape[2]) if i * stride < t0]      # output i sits at input time i*stride
            assert torch.equal(changed[..., seen], out[..., seen])
            if t0 % stride == 0 and t0 // stride < out.shape[2]:
                assert not torch.equal(changed[..., t0 // stride], out[..., t0 // stride])   # ...and at t0 it sees it
    if stride == 1:
        assert block.infer(x=signal()).shape[2] == T


def test_conv1d_checks_its_input_and_params():
    with pytest.raises(InferError, match="rank-3"):
        Conv1d(out_channels=4).infer(x=PortType("signal", (B, 4)))
    with pytest.raises(InferError, match="fixed size"):
        Conv1d(out_channels=4).infer(x=PortType("signal", (B, sym("C"), T)))
    with pytest.raises(InferError, match="groups=3"):
        Conv1d(out_channels=6, groups=3).infer(x=signal(4))
    with pytest.raises(InferError, match="longer than"):
        Conv1d(out_channels=4, kernel=5).infer(x=signal(4, 3))
    for bad in ({"padding": "valid"}, {"kernel": [3]}, {"kernel": "3"}, {"padding": -1}, {"dilation": 0}):
        with pytest.raises(ValidationError):
            Conv1d(out_channels=4, **bad)


# ---- window pools -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(kernel=2), dict(kernel=3, stride=2, padding=1), dict(kernel=3, stride=1),
                                dict(kernel=3, stride=2, ceil_mode=True), dict(kernel=4, stride=2, padding=2)])
def test_pools_match_torch_and_their_inferred_length(kw):
    k, s, p, ceil = kw["kernel"], kw.get("stride", kw["kernel"]), kw.get("padding", 0), kw.get("ceil_mode", False)
    for n in (9, 10, 13):
        x = torch.randn(2, 4, n)
        got, _ = run(MaxPool1d(**kw), x)
        torch.testing.assert_close(got, nn.MaxPool1d(k, s, p, ceil_mode=ceil)(x), rtol=0, atol=0)
        for inc in (True, False):
            avg, _ = run(AvgPool1d(count_include_pad=inc, **kw), x)
            ref = nn.AvgPool1d(k, s, p, ceil_mode=ceil, count_include_pad=inc)(x)
            torch.testing.assert_close(avg, ref, rtol=0, atol=0)
        assert got.shape[2] == out_len(MaxPool1d(**kw), n) == out_len(MaxPool1d(**kw), n, symbolic=False)
    assert MaxPool1d(**kw).param_count(x=signal()) == 0


def test_pool_errors():
    with pytest.raises(InferError, match="at most half"):
        MaxPool1d(kernel=2, padding=2).infer(x=signal())
    with pytest.raises(InferError, match="longer than"):
        AvgPool1d(kernel=4).infer(x=signal(4, 3))
    # torch drops a last window that starts in the padding: the length depends on T mod 2 here
    with pytest.raises(InferError, match="ceil_mode") as exc:
        MaxPool1d(kernel=2, padding=1, ceil_mode=True).infer(x=signal())
    assert exc.value.param == "ceil_mode"
    assert MaxPool1d(kernel=2, padding=1, ceil_mode=True).infer(x=signal(4, 5)).shape[2] == 3     # fixed T: exact
    with pytest.raises(InferError, match="rank-3"):
        MaxPool1d().infer(x=PortType("signal", (B, 4, T, T)))


# ---- masked global pooling ---------------------------------------------------------------------------

LENGTHS = [7, 3, 1, 0]           # the last row is all padding


def padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), 5, 7, generator=g)                           # (B, C, T)
    mask = (torch.arange(7)[None] < torch.tensor(LENGTHS)[:, None]).long()       # (B, T)
    return x, mask


def test_masked_global_pools_equal_pooling_the_cut_signal():
    x, mask = padded_batch()
    mean, _ = run(GlobalAvgPool1d(), x, mask=mask)
    mx, _ = run(GlobalMaxPool1d(), x, mask=mask)
    for i, n in enumerate(LENGTHS):
        if n:
            torch.testing.assert_close(mean[i], x[i, :, :n].mean(-1), atol=1e-6, rtol=0)
            assert torch.equal(mx[i], x[i, :, :n].amax(-1))
        else:                                    # nothing to pool: zeros, never NaN or -inf
            assert torch.equal(mean[i], torch.zeros(5)) and torch.equal(mx[i], torch.zeros(5))
    poisoned = x.masked_fill(mask[:, None] == 0, 1e4)
    assert torch.equal(run(GlobalAvgPool1d(), poisoned, mask=mask)[0], mean)
    assert torch.equal(run(GlobalMaxPool1d(), poisoned, mask=mask)[0], mx)
    assert torch.equal(run(GlobalMaxPool1d(), x, mask=mask.bool())[0], mx)
    torch.testing.assert_close(run(GlobalAvgPool1d(), x)[0], x.mean(-1))
    assert torch.equal(run(GlobalMaxPool1d(), x)[0], x.amax(-1))


def test_global_pools_types():
    mask = PortType("mask", (B, T), "int64")
    for cls in (GlobalAvgPool1d, GlobalMaxPool1d):
        assert cls().infer(x=signal(5)) == PortType("vector", (B, 5)) == cls().infer(x=signal(5), mask=mask)
        with pytest.raises(InferError, match="differ"):
            cls().infer(x=signal(5), mask=PortType("mask", (B, 4), "int64"))
        with pytest.raises(InferError, match="rank-2"):
            cls().infer(x=signal(5), mask=PortType("mask", (B, T, 1), "int64"))


# ---- transpose ---------------------------------------------------------------------------------------


def test_transpose_turns_sequences_into_signals_and_back():
    f = 6
    for kind in ("sequence", "series"):
        assert Transpose().infer(x=PortType(kind, (B, T, f))) == PortType("signal", (B, f, T))
    assert Transpose().infer(x=signal(f)) == PortType("sequence", (B, T, f))
    assert Transpose(dims=[2, 1]).infer(x=signal(f)) == Transpose(dims=[-1, -2]).infer(x=signal(f))
    assert Transpose(dims=[0, 1]).infer(x=signal(f)) == PortType("signal", (f, B, T))          # other swaps keep kind
    assert Transpose(dims=[2, 3]).infer(x=PortType("image", (B, 3, 8, 9))) == PortType("image", (B, 3, 9, 8))
    assert Transpose().infer(x=PortType("feature_map", (B, 3, 8, 9))).kind == "tensor"          # channels moved
    x = torch.randn(2, 5, f)
    assert torch.equal(Transpose().build(x=PortType("series", (B, T, f)))(x), x.transpose(1, 2))
    for bad in ([1, 1], [1, 3]):
        with pytest.raises(InferError):
            Transpose(dims=bad).infer(x=signal())
    with pytest.raises(InferError, match="rank 2"):
        Transpose().infer(x=PortType("tensor", (B,)))
    with pytest.raises(ValidationError):
        Transpose(dims=[1])


# ---- in a pipeline: symbolic shapes, export, layout errors ---------------------------------------------

TCN = """\
pipeline: tcn
dims:
  T: {sizes: [12, 17]}
inputs:
  x: {kind: series, shape: [B, T, 6]}
  mask: {kind: mask, shape: [B, T], dtype: bool}
blocks:
  ct: {block: transpose, in: x}
  conv: {block: conv1d, in: ct, out_channels: 8, kernel: 3, dilation: 2, padding: causal}
  act: {block: relu, in: conv}
  down: {block: maxpool1d, in: act, kernel: 2}
  same: {block: conv1d, in: down, out_channels: 8, kernel: 4, stride: 2, padding: same}
  gap: {block: global_avg_pool1d, in: same}
  gmp: {block: global_max_pool1d, in: {x: act, mask: mask}}
  both: {block: concat, in: [gap, gmp]}
  head: {block: dense, in: both, out_features: 3}
outputs:
  y: head
"""


def test_symbolic_lengths_flow_through_a_pipeline():
    pipe = composer.loads(TCN)
    types = {name: str(t["out"]) for name, t in pipe.graph.types.items()}
    assert types["ct"] == "signal [B, 6, T]"
    assert types["conv"] == "signal [B, 8, T]"                          # causal, stride 1: same length
    assert types["down"] == "signal [B, 8, floor(T/2)]"
    assert format_dim(pipe.graph.types["same"]["out"].shape[2]) == "floor((T+2)/4)"   # ceil(floor(T/2)/2)
    assert types["head"] == "vector [B, 3]"
    assert pipe.graph.params["conv"] == 8 * 6 * 3 + 8 and pipe.graph.params["same"] == 8 * 8 * 4 + 8
    model = pipe.build().eval()
    for n in (12, 17):
        x = torch.randn(2, n, 6)
        with torch.no_grad():
            assert model(x=x, mask=torch.ones(2, n, dtype=torch.bool))["y"].shape == (2, 3)
        want = pipe.graph.types["same"]["out"].shape
        assert evaluate(want[2], {"T": n}) == math.ceil((n // 2) / 2)


def test_tcn_exports_and_matches_at_two_lengths(tmp_path):
    pipe = composer.loads(TCN)
    report = composer.export(pipe, tmp_path / "tcn.onnx")
    ver = report["verification"]
    assert ver["passed"] and {r["sizes"]["T"] for r in ver["runs"]} == {12, 17}
    from composer.runtime import Session
    sess = Session(tmp_path / "tcn.onnx", device="cpu")
    model = pipe.build().eval()
    x, mask = torch.randn(3, 23, 6), torch.arange(23)[None] < torch.tensor([23, 9, 1])[:, None]   # a third length
    got = sess.run({"x": x.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        want = model(x=x, mask=mask)["y"]
    assert (torch.as_tensor(got["y"]) - want).abs().max().item() <= 1e-5


LAYOUT = """\
pipeline: layout
inputs:
  x: {kind: series, shape: [B, T, 6]}
blocks:
  conv: {block: conv1d, in: x, out_channels: 8}
outputs:
  y: conv
"""


def test_a_sequence_into_conv1d_says_which_layout_it_wants(write_spec):
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(LAYOUT, file="layout.yaml")
    first = exc.value.diagnostics[0]
    assert (first.code, first.loc.line) == ("E301", 5)
    assert "`conv` (conv1d)" in first.message and first.expected == "signal"
    assert "[B, C, T]" in first.hint and "channels-first" in first.hint and "`transpose`" in first.hint
    text = first.format()
    spec = write_spec(LAYOUT, "layout.yaml")
    cli = subprocess.run([COMPOSER, "validate", str(spec)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    shown = " ".join((cli.stdout + cli.stderr).split())
    assert "conv1d" in shown and "[B, C, T]" in shown and "transpose" in shown, shown
    assert "E301" in text
    plain = LAYOUT.replace("kind: series", "kind: tensor")             # an untyped rank-3 tensor: say both ways
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(plain)
    hint = exc.value.diagnostics[0].hint
    assert "`kind: signal`" in hint and "`transpose`" in hint and "[B, C, T]" in hint
    fixed = LAYOUT.replace("  conv: {block: conv1d, in: x,", "  ct: {block: transpose, in: x}\n  conv: {block: conv1d, in: ct,")
    assert shape_str(composer.loads(fixed).graph.types["conv"]["out"].shape) == "[B, 8, T-2]"


def test_a_signal_into_dense_suggests_transposing_back():
    spec = """\
pipeline: layout
inputs:
  x: {kind: signal, shape: [B, 6, T]}
blocks:
  head: {block: dense, in: x, out_features: 8}
outputs:
  y: head
"""
    with pytest.raises(composer.SpecError) as exc:
        composer.loads(spec)
    first = exc.value.diagnostics[0]
    assert first.code == "E301" and "[B, T, C]" in first.hint and "`transpose`" in first.hint
