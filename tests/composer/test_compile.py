"""The compiled module: generated forward, determinism, train/eval, torch.compile and torch.export."""

from __future__ import annotations

import torch
from torch import nn

import composer
from composer import summary
from tests.conftest import ROOT

CNN = ROOT / "pipelines" / "cnn_classifier.yaml"


def test_generated_forward_is_readable_code():
    model = composer.load(CNN).build(seed=0)
    code = model.code
    assert code.startswith("def forward(self, image):")
    assert "conv1 = self.conv1(image)  # feature_map [B, 32, H, W]" in code
    assert "return {'logits': head, 'probs': probs}" in code
    # no interpretation at run time: one line per block, no loops or dict lookups of nodes
    assert "for " not in code and "getattr" not in code


def test_same_seed_same_weights_and_per_block_independence(write_spec):
    pipe = composer.load(CNN)
    a, b, c = pipe.build(seed=0), pipe.build(seed=0), pipe.build(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    # adding a block elsewhere leaves every other block's initial weights unchanged
    text = CNN.read_text().replace("  probs: {block: softmax, in: head}",
                                   "  probs: {block: softmax, in: head}\n  extra: {block: dense, in: gap, out_features: 5}")
    text = text.replace("  probs: probs\n", "  probs: probs\n  extra: extra\n")
    other = composer.loads(text).build(seed=0).state_dict()
    assert all(torch.equal(sa[k], other[k]) for k in sa)


def test_outputs_match_inferred_types_in_train_and_eval():
    pipe = composer.load(CNN)
    model = pipe.build()
    x = torch.randn(3, 3, 48, 40)
    for mode in (True, False):
        model.train(mode)
        out = model(image=x)
        assert isinstance(out, dict) and list(out) == ["logits", "probs"]
        assert out["logits"].shape == (3, 10)
    assert torch.allclose(out["probs"].sum(-1), torch.ones(3))


def test_same_as_hand_written_network():
    model = composer.load(CNN).build(seed=0).eval()
    ref = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    sd = model.state_dict()
    ref.load_state_dict({"0.weight": sd["conv1.weight"], "0.bias": sd["conv1.bias"], "3.weight": sd["conv2.weight"],
                         "3.bias": sd["conv2.bias"], "7.weight": sd["head.weight"], "7.bias": sd["head.bias"]})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image=x)["logits"], ref(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_and_export():
    model = composer.load(CNN).build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(image=x)["logits"]
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(image=x)["logits"], expected)
    exported = torch.export.export(model, (), {"image": x})
    torch.testing.assert_close(exported.module()(image=x)["logits"], expected)


def test_frozen_blocks(write_spec):
    text = CNN.read_text().replace("conv1: {block: conv2d,", "conv1: {frozen: true, block: conv2d,")
    pipe = composer.loads(text)
    model = pipe.build()
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    rows = {r.block: r for r in summary.rows(pipe.graph)}
    assert rows["conv1"].frozen and not rows["conv2"].frozen


def test_macs_match_hand_count():
    pipe = composer.load(CNN)
    macs = summary.macs_per_block(pipe.graph, {"B": 1, "H": 64, "W": 64})
    assert macs["conv1"] == 32 * 3 * 9 * 64 * 64
    assert macs["conv2"] == 64 * 32 * 9 * 32 * 32
    assert macs["head"] == 64 * 10


def test_intermediates_are_freed_after_last_use():
    code = composer.load(ROOT / "pipelines" / "residual_cnn.yaml").build().code
    lines = code.splitlines()
    # the stem's activation feeds the first block and its shortcut: freed only after the add
    add = next(i for i, line in enumerate(lines) if "stage['0'].sum([stage__0__bn2, act])" in line)
    assert lines[add + 1].strip() == "del act, stage__0__bn2"
    assert not any(line.strip().startswith("del") and "head" in line for line in lines)  # outputs are kept
