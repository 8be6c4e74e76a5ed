"""`lstm` and `gru` against torch.nn.LSTM / nn.GRU with the same weights (1 and 3 layers, uni- and
bidirectional, with proj_size), padded sequences against running each sequence alone, and the
ONNX export in onnxruntime at batch 1 and 3 and lengths other than the traced one, masked and not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import composer
from blocks.sequence.rnn import GRUBlock, LSTMBlock, compaction
from composer.dims import sym
from composer.types import InferError, PortType

B, T = sym("B"), sym("T")
F = 5
CONFIGS = [  # (block, layers, bidirectional, proj_size)
    ("lstm", 1, False, 0), ("lstm", 3, True, 0), ("lstm", 3, True, 4), ("lstm", 1, True, 3),
    ("gru", 1, False, 0), ("gru", 3, True, 0),
]


def reference(kind: str, layers: int, bi: bool, proj: int, hidden: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    extra = {"proj_size": proj} if kind == "lstm" else {}
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    return cls(F, hidden, num_layers=layers, bidirectional=bi, batch_first=True, **extra).eval()


def ours(kind: str, layers: int, bi: bool, proj: int, hidden: int = 8, masked: bool = False) -> nn.Module:
    extra = {"proj_size": proj} if kind == "lstm" else {}
    block = (LSTMBlock if kind == "lstm" else GRUBlock)(hidden=hidden, layers=layers, bidirectional=bi, **extra)
    mask = PortType("mask", (B, T), "bool") if masked else None
    return block.build(x=PortType("series", (B, T, F)), mask=mask).eval()


def ref_outputs(ref: nn.Module, x: torch.Tensor):
    """(sequence, h, c or None) of the reference."""
    with torch.no_grad():
        y, hx = ref(x)
    return (y, *hx) if isinstance(hx, tuple) else (y, hx, None)


@pytest.mark.parametrize("kind,layers,bi,proj", CONFIGS)
def test_equal_to_torch_with_the_same_weights(kind, layers, bi, proj):
    ref = reference(kind, layers, bi, proj)
    mod = ours(kind, layers, bi, proj)
    assert list(mod.state_dict()) == list(ref.state_dict())          # nn's names: checkpoints load as they are
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 11, F)
    y, h, c = ref_outputs(ref, x)
    with torch.no_grad():
        seq, last, state = mod(x)
    d = 2 if bi else 1
    torch.testing.assert_close(seq, y, atol=1e-6, rtol=0)
    torch.testing.assert_close(state["h"], h, atol=1e-6, rtol=0)
    torch.testing.assert_close(last, h[-d:].transpose(0, 1).reshape(3, -1), atol=1e-6, rtol=0)
    if c is not None:
        torch.testing.assert_close(state["c"], c, atol=1e-6, rtol=0)
    else:
        assert set(state) == {"h"}


def test_initialisation_is_torchs():
    torch.manual_seed(3)
    ref = nn.LSTM(F, 8, num_layers=2, bidirectional=True, batch_first=True)
    torch.manual_seed(3)
    mod = ours("lstm", 2, True, 0)
    for (name, a), (_, b) in zip(ref.state_dict().items(), mod.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind,layers,bi,proj", CONFIGS)
def test_padded_steps_change_nothing(kind, layers, bi, proj):
    """Each sequence of a padded batch gives what it gives alone at its true length; padded steps
    output zeros; `last` and the states are taken at the true length (both directions)."""
    ref = reference(kind, layers, bi, proj)
    mod = ours(kind, layers, bi, proj, masked=True)
    mod.load_state_dict(ref.state_dict())
    lengths = [9, 4, 1, 6]
    x = torch.randn(len(lengths), 9, F)
    mask = torch.arange(9)[None] < torch.tensor(lengths)[:, None]
    poisoned = x.masked_fill(~mask[..., None], 1e3)                    # what sits in the pads is never read
    with torch.no_grad():
        seq, last, state = mod(poisoned, mask)
        by_lengths = mod(poisoned, None, torch.tensor(lengths))
    d = 2 if bi else 1
    for i, n in enumerate(lengths):
        y, h, c = ref_outputs(ref, x[i:i + 1, :n])
        torch.testing.assert_close(seq[i, :n], y[0], atol=1e-6, rtol=0)
        assert torch.equal(seq[i, n:], torch.zeros_like(seq[i, n:]))
        torch.testing.assert_close(state["h"][:, i], h[:, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(last[i], h[-d:, 0].reshape(-1), atol=1e-6, rtol=0)
        if c is not None:
            torch.testing.assert_close(state["c"][:, i], c[:, 0], atol=1e-6, rtol=0)
    for a, b in zip((seq, last, *state.values()), (by_lengths[0], by_lengths[1], *by_lengths[2].values())):
        assert torch.equal(a, b)


def test_a_mask_with_holes_skips_them():
    """Real steps anywhere in the row: the recurrence sees them in order, and each output stays at its step."""
    ref = reference("lstm", 2, True, 0)
    mod = ours("lstm", 2, True, 0, masked=True)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, F)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        seq, last, _ = mod(x, mask)
    for i in range(2):
        keep = mask[i]
        y, h, _ = ref_outputs(ref, x[i:i + 1, keep])
        torch.testing.assert_close(seq[i, keep], y[0], atol=1e-6, rtol=0)
        assert torch.equal(seq[i, ~keep], torch.zeros_like(seq[i, ~keep]))
        torch.testing.assert_close(last[i], h[-2:, 0].reshape(-1), atol=1e-6, rtol=0)
    src, pos = compaction(mask)
    assert src.tolist() == [[0, 2, 3, 5, 1, 4], [2, 3, 4, 5, 0, 1]]
    assert torch.equal(src.gather(1, pos), torch.arange(6).expand(2, 6))


def test_an_all_padding_row_is_zero():
    mod = ours("gru", 2, True, 0, masked=True)
    x = torch.randn(2, 5, F)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        seq, last, state = mod(x, mask)
    assert not seq[1].any() and not last[1].any() and not state["h"][:, 1].any()
    assert seq[0, :3].abs().sum() > 0


@pytest.mark.parametrize("kind,layers,bi,proj", [CONFIGS[2], CONFIGS[5]])
def test_the_onnx_layer_op_computes_torchs_function(kind, layers, bi, proj):
    """The export path (one ONNX-semantics layer op per layer, weights in ONNX's gate order, the
    projection folded into the recurrent matrix), evaluated in torch, equals nn's packed result."""
    ref = reference(kind, layers, bi, proj)
    mod = ours(kind, layers, bi, proj)
    mod.load_state_dict(ref.state_dict())
    lengths = torch.tensor([7, 2, 5])
    x = torch.randn(3, 7, F)
    with torch.no_grad():
        y, h, c = mod._export_forward(x, lengths)
        seq, _, state = mod(x, None, lengths)
    torch.testing.assert_close(y, seq, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, state["h"], atol=1e-6, rtol=0)


def _export_spec(kind: str) -> str:
    blocks = []
    for i, (k, layers, bi, proj) in enumerate(c for c in CONFIGS if c[0] == kind):
        extra = f", proj_size: {proj}" if proj else ""
        for masked in (False, True):
            name = f"{'m' if masked else 'u'}{i}"
            src = "{x: x, mask: mask}" if masked else "x"
            blocks.append(f"  {name}: {{block: {k}, in: {src}, hidden: 8, layers: {layers}, "
                          f"bidirectional: {str(bi).lower()}{extra}}}")
    outs = [f"  {n}_{p}: {n}.{p}" for n in (b.split(":")[0].strip() for b in blocks) for p in ("sequence", "last")]
    outs += [f"  {n}_h: {n}.state.h" for n in (b.split(":")[0].strip() for b in blocks)]
    return f"""\
pipeline: {kind}_parity
dims:
  B: {{sizes: [1, 3]}}
  T: {{sizes: [7, 50], example: 20}}
inputs:
  x: {{kind: series, shape: [B, T, {F}]}}
  mask: {{kind: mask, shape: [B, T], dtype: bool}}
blocks:
""" + "\n".join(blocks) + "\noutputs:\n" + "\n".join(outs) + "\n"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_onnxruntime_equals_torch_nn_at_other_batches_and_lengths(kind, tmp_path):
    """Exported with a trace at T=20, run in onnxruntime at B 1 and 3 and T 7, 50 and 300,
    unmasked and masked, against torch.nn's layers (each masked sequence alone at its length)."""
    from composer.runtime import Session

    configs = [c for c in CONFIGS if c[0] == kind]
    pipe = composer.loads(_export_spec(kind))
    model = pipe.build().eval()
    refs = {}
    for i, cfg in enumerate(configs):
        refs[i] = reference(*cfg, seed=i)
        for prefix in "um":
            getattr(model, f"{prefix}{i}").load_state_dict(refs[i].state_dict())
    report = composer.export(model, tmp_path / "rnn.onnx", pipeline=pipe)
    assert report["verification"]["passed"]
    sess = Session(tmp_path / "rnn.onnx", device="cpu")
    g = torch.Generator().manual_seed(1)
    for b, t in [(1, 7), (3, 50), (3, 300), (1, 300)]:
        x = torch.randn(b, t, F, generator=g)
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[-1] = t
        mask = torch.arange(t)[None] < lengths[:, None]
        got = sess.run({"x": x.numpy(), "mask": mask.numpy()})
        for i, (_, layers, bi, proj) in enumerate(configs):
            d = 2 if bi else 1
            y, h, _ = ref_outputs(refs[i], x)
            err = max(abs(torch.as_tensor(got[f"u{i}_sequence"]) - y).max().item(),
                      abs(torch.as_tensor(got[f"u{i}_h"]) - h).max().item(),
                      abs(torch.as_tensor(got[f"u{i}_last"]) - h[-d:].transpose(0, 1).reshape(b, -1)).max().item())
            assert err <= 1e-6 if t < 300 else err <= 2e-6, (i, b, t, err)
            for row, n in enumerate(lengths.tolist()):
                y, h, _ = ref_outputs(refs[i], x[row:row + 1, :n])
                seq = torch.as_tensor(got[f"m{i}_sequence"][row])
                err = max(abs(seq[:n] - y[0]).max().item(), abs(seq[n:]).max().item() if n < t else 0.0,
                          abs(torch.as_tensor(got[f"m{i}_h"][:, row]) - h[:, 0]).max().item(),
                          abs(torch.as_tensor(got[f"m{i}_last"][row]) - h[-d:, 0].reshape(-1)).max().item())
                assert err <= 1e-6 if t < 300 else err <= 2e-6, (i, b, t, row, err)


def test_the_export_holds_no_weight_rearranging(tmp_path):
    """Gate reordering and the folded projection are computed once at export, not per run."""
    import onnx

    pipe = composer.loads("""\
pipeline: big_lstm
dims: {T: {sizes: [5, 9]}}
inputs:
  x: {kind: series, shape: [B, T, 64]}
blocks:
  rnn: {block: lstm, in: x, hidden: 128, proj_size: 32, bidirectional: true}
outputs:
  y: rnn.sequence
""")
    composer.export(pipe, tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    inits = {i.name for i in graph.initializer}
    lstm = next(n for n in graph.node if n.op_type == "LSTM")
    assert all(i in inits for i in lstm.input[1:4])                   # W, R, B are weights of the file
    assert not any(n.op_type in ("Slice", "Split", "Concat") and all(i in inits for i in n.input if i)
                   for n in graph.node)


def test_bad_inputs_are_errors():
    x = PortType("series", (B, T, F))
    with pytest.raises(InferError, match="not both"):
        LSTMBlock(hidden=4).infer(x=x, mask=PortType("mask", (B, T), "bool"), lengths=PortType("count", (B,), "int64"))
    with pytest.raises(InferError, match="smaller than hidden"):
        LSTMBlock(hidden=4, proj_size=4).infer(x=x)
    with pytest.raises(InferError, match="fixed size"):
        GRUBlock(hidden=4).infer(x=PortType("series", (B, T, sym("F"))))
    with pytest.raises(InferError, match="rank-3"):
        GRUBlock(hidden=4).infer(x=PortType("vector", (B, F)))
    with pytest.raises(InferError, match="integer lengths"):
        GRUBlock(hidden=4).infer(x=x, lengths=PortType("tensor", (B,)))
    with pytest.raises(InferError, match="differ"):
        GRUBlock(hidden=4).infer(x=x, mask=PortType("mask", (B, 3), "bool"))


def test_types_and_parameter_counts():
    x = PortType("series", (B, T, F))
    out = LSTMBlock(hidden=8, layers=2, bidirectional=True, proj_size=3).infer(x=x)
    assert out["sequence"].shape == (B, T, 6) and out["last"].shape == (B, 6)
    assert out["state"].field("h").shape == (4, B, 3) and out["state"].field("c").shape == (4, B, 8)
    for kind, layers, bi, proj in CONFIGS:
        block = (LSTMBlock if kind == "lstm" else GRUBlock)(hidden=8, layers=layers, bidirectional=bi,
                                                            **({"proj_size": proj} if kind == "lstm" else {}))
        assert block.param_count(x=x) == sum(p.numel() for p in reference(kind, layers, bi, proj).parameters())


class PlainTagger(nn.Module):
    """What a user writes by hand in PyTorch: a BiGRU over features, a linear layer per step."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(F, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        return self.out(self.gru(x)[0])


def test_a_plain_pytorch_checkpoint_loads_and_gives_the_same_outputs(tmp_path):
    from composer.weights import load_weights

    torch.manual_seed(5)
    plain = PlainTagger().eval()
    torch.save(plain.state_dict(), tmp_path / "tagger.pt")
    pipe = composer.loads(f"""\
pipeline: tagger
inputs:
  x: {{kind: series, shape: [B, T, {F}]}}
blocks:
  rnn: {{block: gru, in: x, hidden: 16, layers: 2, bidirectional: true}}
  tags: {{block: dense, in: rnn.sequence, out_features: 3}}
outputs:
  tags: tags
""")
    model = pipe.build().eval()
    report = load_weights(model, tmp_path / "tagger.pt")
    assert not report.missing and not report.unused
    x = torch.randn(2, 13, F)
    with torch.no_grad():
        assert torch.equal(model(x=x)["tags"], plain(x))


def test_a_mask_with_nothing_padded_gives_the_plain_result():
    mod = ours("lstm", 2, True, 0, masked=True)
    x = torch.randn(3, 6, F)
    with torch.no_grad():
        plain = mod(x)
        full = mod(x, torch.ones(3, 6, dtype=torch.bool))
        by_lengths = mod(x, None, torch.full((3,), 6))
    for got in (full, by_lengths):
        assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
        assert all(torch.equal(got[2][k], plain[2][k]) for k in ("h", "c"))
