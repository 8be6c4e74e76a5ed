"""DCGAN: a generator and a discriminator written in plain PyTorch (nn.Sequential, the layout of the
DCGAN paper and the PyTorch tutorial) load their state dicts into composed specs, both one of plain core
layers and one of the `dcgan_*` blocks, and give the same images and scores; pipelines/dcgan.yaml has the
paper's parameter counts and its parts run alone; the spectral-norm discriminator exports to ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import composer
from blocks.generative.gan import DCGANDiscriminator, DCGANGenerator
from composer.dims import sym
from composer.errors import SpecError
from composer.parts import part_model
from composer.types import InferError, PortType
from composer.weights import load_weights

ROOT = Path(__file__).resolve().parents[3]
B = sym("B")


def reference_generator(nz: int, ngf: int, nc: int, size: int) -> nn.Sequential:
    """The plain-PyTorch DCGAN generator (as in the PyTorch DCGAN tutorial), for any power-of-2 size."""
    n = size.bit_length() - 3
    chans = [ngf * 2 ** (n - 1 - i) for i in range(n)]
    layers = [nn.ConvTranspose2d(nz, chans[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
    for a, b in zip(chans, chans[1:]):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(chans[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def reference_discriminator(nc: int, ndf: int, size: int, sn: bool = False) -> nn.Sequential:
    """The plain-PyTorch DCGAN discriminator (ending in a Sigmoid); `sn`: SN-GAN's variant (no batchnorm)."""
    n = size.bit_length() - 3
    wrap = spectral_norm if sn else (lambda m: m)
    layers: list[nn.Module] = [wrap(nn.Conv2d(nc, ndf, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True)]
    for i in range(1, n):
        layers.append(wrap(nn.Conv2d(ndf * 2 ** (i - 1), ndf * 2 ** i, 4, 2, 1, bias=False)))
        if not sn:
            layers.append(nn.BatchNorm2d(ndf * 2 ** i))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    layers += [wrap(nn.Conv2d(ndf * 2 ** (n - 1), 1, 4, 1, 0, bias=False)), nn.Sigmoid()]
    return nn.Sequential(*layers)


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial batchnorm statistics, so a misplaced tensor shows in the outputs."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.normal_(0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _safetensors(model: nn.Module, path: Path) -> Path:
    """A safetensors file: keys sorted, order lost, so only the module structure can place them."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


NZ, NGF, NDF, SIZE = 16, 8, 8, 32

LAYERS_SPEC = f"""\
pipeline: g_layers
inputs:
  z: {{kind: latent, shape: [B, {NZ}, 1, 1]}}
blocks:
  up1:  {{block: conv_transpose2d, in: z, out_channels: {NGF * 4}, kernel: 4, stride: 1, padding: 0, bias: false}}
  bn1:  {{block: batchnorm, in: up1}}
  act1: {{block: relu, in: bn1}}
  up2:  {{block: conv_transpose2d, in: act1, out_channels: {NGF * 2}, kernel: 4, stride: 2, padding: 1, bias: false}}
  bn2:  {{block: batchnorm, in: up2}}
  act2: {{block: relu, in: bn2}}
  up3:  {{block: conv_transpose2d, in: act2, out_channels: {NGF}, kernel: 4, stride: 2, padding: 1, bias: false}}
  bn3:  {{block: batchnorm, in: up3}}
  act3: {{block: relu, in: bn3}}
  up4:  {{block: conv_transpose2d, in: act3, out_channels: 3, kernel: 4, stride: 2, padding: 1, bias: false}}
  out:  {{block: tanh, in: up4}}
outputs:
  image: out
"""

BLOCK_SPEC = f"""\
pipeline: g_block
inputs:
  z: {{kind: latent, shape: [B, {NZ}]}}
blocks:
  generator: {{block: dcgan_generator, in: z, size: {SIZE}, width: {NGF}}}
outputs:
  image: generator
"""


@pytest.mark.parametrize("spec", [LAYERS_SPEC, BLOCK_SPEC], ids=["core_layers", "dcgan_generator"])
def test_a_plain_pytorch_dcgan_generator_loads_and_gives_the_same_images(spec, tmp_path):
    ref = _randomized(reference_generator(NZ, NGF, 3, SIZE))
    pipe = composer.loads(spec)
    assert pipe.graph.total_params() == sum(p.numel() for p in ref.parameters())
    model = pipe.build(seed=1).eval()
    rep = load_weights(model, _safetensors(ref, tmp_path / "g.safetensors"))
    assert rep.strategy == "structure" and rep.loaded == len(ref.state_dict()) == len(model.state_dict())
    assert rep.unused == [] and rep.missing == []
    z = torch.randn(2, NZ, 1, 1)
    zin = z if "1, 1]" in spec else z.flatten(1)
    with torch.no_grad():
        got, want = model(z=zin)["image"], ref(z)
    assert got.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # a .pt file keeps its order: that loads too
    torch.save(ref.state_dict(), tmp_path / "g.pt")
    model2 = pipe.build(seed=2).eval()
    assert load_weights(model2, tmp_path / "g.pt").loaded == len(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model2(z=zin)["image"], want, rtol=0, atol=1e-6)


def test_the_generator_block_takes_flat_and_4d_codes_alike():
    block = DCGANGenerator(size=16, width=4, channels=1)
    flat, square = PortType("latent", (B, 8)), PortType("latent", (B, 8, 1, 1))
    assert block.infer(z=flat) == block.infer(z=square) == PortType("image", (B, 1, 16, 16))
    torch.manual_seed(0)
    m1 = block.build(z=flat).eval()
    m2 = block.build(z=square).eval()
    m2.load_state_dict(m1.state_dict())
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(m1(z), m2(z[:, :, None, None]), rtol=0, atol=0)
        assert m1(z).abs().max() <= 1.0


def test_dcgan_init_draws_as_the_paper():
    torch.manual_seed(0)
    g = DCGANGenerator(size=64).build(z=PortType("latent", (B, 100)))
    w = torch.cat([m.weight.flatten() for m in g if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in g if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 5e-3
    torch.manual_seed(0)
    plain = DCGANGenerator(size=64, init="torch").build(z=PortType("latent", (B, 100)))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in plain if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("sn", [False, True], ids=["batchnorm", "spectral_norm"])
def test_a_plain_pytorch_dcgan_discriminator_loads_and_gives_the_same_scores(sn, tmp_path):
    ref = _randomized(reference_discriminator(3, NDF, SIZE, sn))
    block = DCGANDiscriminator(width=NDF, spectral_norm=sn)
    x = PortType("image", (B, 3, SIZE, SIZE))
    assert block.infer(x=x) == PortType("logits", (B, 1))
    assert block.param_count(x=x) == sum(p.numel() for p in ref.parameters())
    module = block.build(x=x).eval()
    # the block's layers are the reference's by index, except the Sigmoid (a Flatten: logits out)
    assert sorted(module.state_dict()) == sorted(ref.state_dict())
    module.load_state_dict(ref.state_dict())
    img = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(module(img)), ref(img).view(2, 1), rtol=0, atol=1e-6)


def test_pipeline_dcgan_has_the_papers_parameter_counts_and_loads_both_networks():
    g_ref = _randomized(reference_generator(100, 64, 3, 64), seed=0)
    d_ref = _randomized(reference_discriminator(3, 64, 64), seed=1)
    n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (g_ref, d_ref))
    assert (n_g, n_d) == (3_576_704, 2_765_568)
    pipe = composer.load(ROOT / "pipelines" / "dcgan.yaml")
    assert pipe.graph.total_params() == n_g + n_d
    model = pipe.build(seed=0).eval()
    model.load_state_dict({**{f"generator.{k}": v for k, v in g_ref.state_dict().items()},
                           **{f"discriminator.{k}": v for k, v in d_ref.state_dict().items()}})
    z = torch.randn(2, 100, 1, 1)
    with torch.no_grad():
        out = model(z=z)
        torch.testing.assert_close(out["image"], g_ref(z), rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.sigmoid(out["score"]), d_ref(g_ref(z)).view(2, 1), rtol=0, atol=1e-6)
        # the parts: z -> images, and images given from outside (real ones) -> scores
        gen, disc = part_model(model, "generator"), part_model(model, "discriminator")
        torch.testing.assert_close(gen(z=z)["image"], out["image"], rtol=0, atol=0)
        real = torch.rand(2, 3, 64, 64) * 2 - 1
        torch.testing.assert_close(torch.sigmoid(disc(image=real)["score"]), d_ref(real).view(2, 1),
                                   rtol=0, atol=1e-6)


def test_spectral_norm_discriminator_exports_to_onnx_and_matches_torch(tmp_path):
    from composer.runtime import Session
    spec = f"""\
pipeline: sn_disc
dims:
  B: {{sizes: [1, 3], example: 2}}
inputs:
  image: {{kind: image, shape: [B, 3, 16, 16]}}
blocks:
  disc: {{block: dcgan_discriminator, in: image, width: 8, spectral_norm: true}}
outputs:
  score: disc
"""
    pipe = composer.loads(spec)
    model = pipe.build(seed=0)
    ref = reference_discriminator(3, 8, 16, sn=True)
    model.train()
    for _ in range(3):                                   # power iterations move u, v from their first draw
        model(image=torch.randn(2, 3, 16, 16))
    model.eval()
    ref.load_state_dict({k.removeprefix("disc."): v for k, v in model.state_dict().items()})
    report = composer.export(model, tmp_path / "sn.onnx")
    assert report["verification"]["passed"]
    x = torch.randn(3, 3, 16, 16)
    got = torch.as_tensor(Session(tmp_path / "sn.onnx", device="cpu").run({"image": x.numpy()})["score"])
    with torch.no_grad():
        want = ref.eval()(x).view(3, 1)
    assert (torch.sigmoid(got) - want).abs().max().item() < 1e-5


def test_dcgan_errors_are_located():
    with pytest.raises(InferError) as e:
        DCGANGenerator(size=48).infer(z=PortType("latent", (B, 100)))
    assert e.value.param == "size" and e.value.found == "48"
    with pytest.raises(InferError) as e:
        DCGANGenerator(size=4).infer(z=PortType("latent", (B, 100)))
    assert e.value.param == "size"
    with pytest.raises(InferError) as e:
        DCGANGenerator().infer(z=PortType("latent", (B, 100, 2, 2)))
    assert e.value.port == "z" and e.value.expected == "[B, Z, 1, 1]"
    with pytest.raises(InferError) as e:
        DCGANGenerator().infer(z=PortType("latent", (B, sym("Z"))))
    assert e.value.port == "z"
    for shape in ((B, 3, 48, 48), (B, 3, 32, 64), (B, 3, sym("H"), sym("H"))):
        with pytest.raises(InferError) as e:
            DCGANDiscriminator().infer(x=PortType("image", shape))
        assert e.value.port == "x"
    spec = BLOCK_SPEC.replace(f"size: {SIZE}", "size: 100")
    with pytest.raises(SpecError) as exc:
        composer.loads(spec, "spec.yaml")
    (d,) = exc.value.diagnostics
    assert d.path == "blocks.generator.size" and d.loc.line == 5 and "power of 2" in d.message
