"""A model ported from TensorFlow: written here in plain PyTorch with explicit `F.pad` SAME
padding and EfficientNet-PyTorch's names (`_conv_stem`, `_blocks.N._depthwise_conv`, ...),
loaded through rename rules into a spec of our parts with `padding: same`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import composer
from composer.weights import load_weights


def tf_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow SAME: total padding max((ceil(n/s) - 1)·s + k - n, 0), the extra pixel bottom/right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SameConv(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(tf_same(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


def bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


class Block(nn.Module):
    """EfficientNet-PyTorch's MBConvBlock: [expand,] depthwise, squeeze-excite, project, [skip]."""

    def __init__(self, cin: int, cout: int, k: int, s: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, s, groups=mid, bias=False)
        self._bn1 = bn(mid)
        squeeze = max(1, cin // 4)
        self._se_reduce = nn.Conv2d(mid, squeeze, 1)
        self._se_expand = nn.Conv2d(squeeze, mid, 1)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = F.silu(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.silu(self._bn1(self._depthwise_conv(y)))
        y = y * torch.sigmoid(self._se_expand(F.silu(self._se_reduce(y.mean((2, 3), keepdim=True)))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class TFPorted(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 16, 3, 2, bias=False)
        self._bn0 = bn(16)
        self._blocks = nn.ModuleList([Block(16, 8, 3, 1, 1), Block(8, 16, 5, 2, 6), Block(16, 16, 3, 1, 6)])
        self._conv_head = SameConv(16, 64, 1, bias=False)
        self._bn1 = bn(64)
        self._fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.silu(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


SPEC = """\
pipeline: tf_ported
dims:
  B: {sizes: [1, 2], example: 1}
  H: {DIM, example: 64}
  W: {DIM, example: 64}
inputs:
  image: {kind: image, shape: [B, 3, H, W]}
blocks:
  stem: {block: conv_bn_act, in: image, out_channels: 16, kernel: 3, stride: 2, padding: PAD, activation: silu, eps: 1.0e-3}
  b0: {block: mbconv, in: stem, out_channels: 8, kernel: 3, expand_ratio: 1, padding: PAD, eps: 1.0e-3}
  b1: {block: mbconv, in: b0, out_channels: 16, kernel: 5, stride: 2, expand_ratio: 6, padding: PAD, eps: 1.0e-3}
  b2: {block: mbconv, in: b1, out_channels: 16, kernel: 3, expand_ratio: 6, padding: PAD, eps: 1.0e-3}
  head: {block: conv_bn_act, in: b2, out_channels: 64, kernel: 1, activation: silu, eps: 1.0e-3}
  pool: {block: global_avg_pool, in: head}
  fc: {block: dense, in: pool, out_features: 10}
outputs:
  logits: fc
"""

# EfficientNet-PyTorch's names -> torchvision's MBConv layout (block.0 expand, block.1 depthwise,
# block.2 squeeze-excite, block.3 project; one index less without the expansion)
RULES = [
    (r"^_conv_stem\.", "stem.0."), (r"^_bn0\.", "stem.1."),
    (r"^_blocks\.0\._depthwise_conv\.", "b0.block.0.0."), (r"^_blocks\.0\._bn1\.", "b0.block.0.1."),
    (r"^_blocks\.0\._se_reduce\.", "b0.block.1.fc1."), (r"^_blocks\.0\._se_expand\.", "b0.block.1.fc2."),
    (r"^_blocks\.0\._project_conv\.", "b0.block.2.0."), (r"^_blocks\.0\._bn2\.", "b0.block.2.1."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"b\1.block.0.0."), (r"^_blocks\.(\d+)\._bn0\.", r"b\1.block.0.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"b\1.block.1.0."), (r"^_blocks\.(\d+)\._bn1\.", r"b\1.block.1.1."),
    (r"^_blocks\.(\d+)\._se_reduce\.", r"b\1.block.2.fc1."), (r"^_blocks\.(\d+)\._se_expand\.", r"b\1.block.2.fc2."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"b\1.block.3.0."), (r"^_blocks\.(\d+)\._bn2\.", r"b\1.block.3.1."),
    (r"^_conv_head\.", "head.0."), (r"^_bn1\.", "head.1."), (r"^_fc\.", "fc."),
]


def _reference(tmp_path):
    torch.manual_seed(0)
    ref = TFPorted()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / "tf_ported.pth"
    torch.save(ref.state_dict(), path)
    return ref.eval(), path


@pytest.mark.parametrize("dim, sizes", [
    ("sizes: [63, 64]", [(63, 57), (64, 64), (50, 33)]),        # symbolic H, W: padding from the runtime shape
    ("multiple_of: 32, sizes: [64, 96]", [(64, 64), (96, 64)]),  # the stride divides H: constant padding
])
def test_tf_ported_model_loads_through_rename_rules_and_matches(tmp_path, dim, sizes):
    ref, path = _reference(tmp_path)
    model = composer.loads(SPEC.replace("DIM", dim).replace("PAD", "same")).build().eval()
    rep = load_weights(model, path, rename=RULES)
    assert rep.renamed == rep.loaded == len(ref.state_dict()) and rep.warnings == []
    with torch.no_grad():
        for h, w in sizes:
            x = torch.randn(2, 3, h, w)
            torch.testing.assert_close(model(image=x)["logits"], ref(x), rtol=1e-5, atol=1e-5)


def test_symmetric_padding_does_not_match_a_tf_model(tmp_path):
    """The same weights with torchvision's symmetric padding give other logits: SAME is what matches."""
    ref, path = _reference(tmp_path)
    model = composer.loads(SPEC.replace("DIM", "sizes: [63, 64]").replace("PAD", "symmetric")).build().eval()
    load_weights(model, path, rename=RULES)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem = F.silu(ref._bn0(ref._conv_stem(x)))
        assert model.stem(x).shape == stem.shape
        assert (model.stem(x) - stem).abs().max() > 0.1          # shifted by one pixel
        assert (model(image=x)["logits"] - ref(x)).abs().max() > 2e-5
