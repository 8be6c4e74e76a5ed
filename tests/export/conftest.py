from __future__ import annotations

import pytest

TINY_CNN = """\
pipeline: tiny_cnn
seed: 0
dims:
  B: {sizes: [1, 3], example: 1}
  H: {multiple_of: 2, sizes: [16, 24], example: 16}
  W: {multiple_of: 2, sizes: [16, 24], example: 16}
inputs:
  image:
    kind: image
    shape: [B, 3, H, W]
    preprocess: {resize: 20, crop: 16, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
blocks:
  conv: {block: conv2d, in: image, out_channels: 4, kernel: 3, padding: 1}
  act: {block: relu, in: conv}
  gap: {block: global_avg_pool, in: act}
  head: {block: dense, in: gap, out_features: 5}
  probs: {block: softmax, in: head}
outputs:
  logits: head
  probs: probs
"""


@pytest.fixture
def tiny_spec(write_spec):
    return write_spec(TINY_CNN, "tiny_cnn.yaml")


@pytest.fixture
def tiny_pipe(tiny_spec):
    import composer
    return composer.load(tiny_spec)
