"""Every backbone family, exported with a torchvision checkpoint through `composer export
--weights`, gives torchvision's logits in onnxruntime; and `composer run` on a photo prints
the top-5 classes of an image-classification spec."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
import torchvision

import composer
from composer.runtime import Session
from tests.blocks.vision._support import randomize
from tests.conftest import COMPOSER, ROOT

# family -> (block params, torchvision constructor, input size)
FAMILIES = {
    "resnet18": ("{block: resnet, depth: 18, num_classes: 1000}", torchvision.models.resnet18, 64),
    "resnet50": ("{block: resnet, depth: 50, num_classes: 1000}", torchvision.models.resnet50, 64),
    "mobilenet_v3_small": ("{block: mobilenet, variant: v3_small, num_classes: 1000}",
                           torchvision.models.mobilenet_v3_small, 64),
    "efficientnet_b0": ("{block: efficientnet, variant: b0, num_classes: 1000}", torchvision.models.efficientnet_b0, 64),
    "efficientnet_b1": ("{block: efficientnet, variant: b1, num_classes: 1000}", torchvision.models.efficientnet_b1, 64),
    "densenet121": ("{block: densenet, depth: 121, num_classes: 1000}", torchvision.models.densenet121, 64),
    "inception_v3": ("{block: inception, num_classes: 1000}",
                     lambda weights=None: torchvision.models.inception_v3(weights=None, aux_logits=True,
                                                                          init_weights=False), 80),
    "vit_b16": ("{block: vit, variant: b16, image_size: 32, num_classes: 1000}",
                lambda weights=None: torchvision.models.vit_b_16(weights=None, image_size=32), 32),
}


def spec_for(block: str, size: int) -> str:
    fixed = "vit" in block  # ViT takes exactly its image_size
    lines = ["pipeline: parity"]
    if not fixed:
        lines.append(f"dims: {{H: {{sizes: [{size}, {size + 32}]}}, W: {{sizes: [{size}, {size + 32}]}}}}")
    shape = f"[B, 3, {size}, {size}]" if fixed else "[B, 3, H, W]"
    lines += ["inputs:", f"  image: {{kind: image, shape: {shape}}}", "blocks:",
              "  net: {in: image, " + block[1:], "outputs:", "  logits: net.logits"]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_export_with_torchvision_weights_matches_torchvision(family, tmp_path, write_spec):
    block, make, size = FAMILIES[family]
    ref = randomize(make(weights=None), std=0.05)
    ckpt = tmp_path / f"{family}.pth"
    torch.save(ref.state_dict(), ckpt)
    spec = write_spec(spec_for(block, size))
    out = tmp_path / f"{family}.onnx"
    proc = subprocess.run([COMPOSER, "export", str(spec), "-o", str(out), "--weights", str(ckpt)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        ours = composer.load(spec).build().eval()
        composer.load_weights(ours, ckpt)
        torch_logits = ours(image=x)["logits"]
    got = Session(out, device="cpu").run({"image": x.numpy()})["logits"]
    scale = max(1.0, expected.abs().max().item())
    assert (torch_logits - expected).abs().max().item() <= 1e-4 * scale
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * scale


def test_run_prints_top5_for_a_photo(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    proc = subprocess.run([COMPOSER, "run", str(ROOT / "pipelines" / "classification.yaml"), "--input",
                           f"image={tmp_path / 'photo.jpg'}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "logits  [1, 1000]" in proc.stdout and "top-5" in proc.stdout
