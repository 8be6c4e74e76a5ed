"""VAE: `reparameterize` draws z = mu + exp(logvar/2)·eps in training (checked by its statistics, its
gradients and the draw itself) and gives mu in eval mode, with one output type in both; pipelines/vae.yaml's
`decoder` part maps z ~ N(0, I) to images as a plain-PyTorch decoder with the same weights does, its
`encoder` part gives the pipeline's mu and logvar, and the decoder part exports to ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from blocks.generative.vae import Reparameterize
from composer.dims import sym
from composer.parts import part_model, part_pipeline
from composer.types import InferError, PortType

ROOT = Path(__file__).resolve().parents[3]
B = sym("B")


def _module(shape=(B, 2)):
    t = PortType("vector", shape)
    return Reparameterize().build(mu=t, logvar=t)


def test_training_draws_follow_n_mu_sigma():
    m = _module().train()
    mu = torch.tensor([[1.5, -2.0]]).expand(200_000, 2)
    logvar = torch.tensor([[0.0, 2 * torch.log(torch.tensor(0.3)).item()]]).expand(200_000, 2)   # sigma 1 and 0.3
    torch.manual_seed(0)
    z = m(mu, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.3]), atol=0.005, rtol=0)
    assert abs(torch.corrcoef(z.T)[0, 1].item()) < 0.01                  # independent coordinates
    # the draw is mu + exp(logvar / 2) * eps, eps the next N(0, I) draw of torch's generator
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    torch.manual_seed(7)
    z = _module((B, 4)).train()(mu, logvar)
    torch.manual_seed(7)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * torch.randn(3, 4), rtol=0, atol=0)
    torch.manual_seed(8)
    assert not torch.equal(_module((B, 4)).train()(mu, logvar), z)          # a new draw per call


def test_gradients_pass_through_the_draw():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    torch.manual_seed(1)
    z = _module((B, 3)).train()(mu, logvar)
    z.sum().backward()
    torch.manual_seed(1)
    eps = torch.randn(4, 3)
    torch.testing.assert_close(mu.grad, torch.ones(4, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_eval_mode_gives_the_mean_and_the_type_never_changes():
    mu, logvar = torch.randn(2, 5), torch.randn(2, 5)
    m = _module((B, 5))
    for train in (True, False):
        z = m.train(train)(mu, logvar)
        assert z.shape == mu.shape and z.dtype == mu.dtype
    assert torch.equal(m.eval()(mu, logvar), mu)
    for shape in ((B, 5), (B, 8, 4, 4)):
        t = PortType("vector" if len(shape) == 2 else "feature_map", shape)
        assert Reparameterize().infer(mu=t, logvar=t) == PortType("latent", shape)


def test_reparameterize_errors_are_located():
    with pytest.raises(InferError) as e:
        Reparameterize().infer(mu=PortType("vector", (B, 4)), logvar=PortType("vector", (B, 5)))
    assert e.value.port == "logvar"
    with pytest.raises(InferError) as e:
        Reparameterize().infer(mu=PortType("vector", (B, 4), "int64"), logvar=PortType("vector", (B, 4)))
    assert e.value.port == "mu"
    with pytest.raises(InferError) as e:
        Reparameterize().infer(mu=PortType("vector", (B, 4, 2)), logvar=PortType("vector", (B, 4, 2)))
    assert e.value.port == "mu"


# ---- pipelines/vae.yaml ----------------------------------------------------------------------------


def reference_decoder() -> nn.Sequential:
    """vae.yaml's decoder in plain PyTorch."""
    return nn.Sequential(
        nn.Linear(64, 2048), nn.ReLU(), nn.Unflatten(1, (128, 4, 4)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Sigmoid())


def reference_encoder() -> tuple[nn.Sequential, nn.Linear, nn.Linear]:
    body = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
    return body, nn.Linear(2048, 64), nn.Linear(2048, 64)


def _by_order(dst: nn.Module, src: nn.Module) -> None:
    keys = list(dst.state_dict())
    values = list(src.state_dict().values())
    assert [tuple(v.shape) for v in values] == [tuple(t.shape) for t in dst.state_dict().values()]
    dst.load_state_dict(dict(zip(keys, values)))


def test_vae_decoder_part_maps_latent_draws_to_images_like_plain_pytorch():
    pipe = composer.load(ROOT / "pipelines" / "vae.yaml")
    model = pipe.build(seed=0).eval()
    decoder = part_model(model, "decoder")
    sub = part_pipeline(pipe, "decoder")
    assert list(sub.resolved.inputs) == ["z"] and sub.resolved.inputs["z"].type == PortType("latent", (B, 64))
    ref = reference_decoder().eval()
    _by_order(ref, decoder)
    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))         # z ~ N(0, I): sampling
    with torch.no_grad():
        images = decoder(z=z)["reconstruction"]
        torch.testing.assert_close(images, ref(z), rtol=0, atol=1e-6)
    assert images.shape == (3, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def test_vae_encoder_part_and_the_whole_pipeline_agree_with_plain_pytorch():
    model = composer.load(ROOT / "pipelines" / "vae.yaml").build(seed=0).eval()
    body, mu_head, logvar_head = reference_encoder()
    dec = reference_decoder()
    ref = nn.ModuleList([body, mu_head, logvar_head, dec]).eval()
    _by_order(ref, model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(image=x)
        h = body(x)
        torch.testing.assert_close(out["mu"], mu_head(h), rtol=0, atol=1e-6)
        torch.testing.assert_close(out["logvar"], logvar_head(h), rtol=0, atol=1e-6)
        assert torch.equal(out["z"], out["mu"])                                   # eval: z is the mean
        torch.testing.assert_close(out["reconstruction"], dec(mu_head(h)), rtol=0, atol=1e-6)
        enc = part_model(model, "encoder")(image=x)
        assert list(enc) == ["mu", "logvar"] and torch.equal(enc["mu"], out["mu"])
    model.train()                                                               # training: z is a draw
    torch.manual_seed(3)
    out = model(image=x)
    torch.manual_seed(3)
    eps = torch.randn(2, 64)
    torch.testing.assert_close(out["z"], out["mu"] + torch.exp(0.5 * out["logvar"]) * eps, rtol=0, atol=1e-6)


def test_vae_decoder_part_exports_and_matches_torch(tmp_path):
    from composer.runtime import Session
    model = composer.load(ROOT / "pipelines" / "vae.yaml").build(seed=0).eval()
    decoder = part_model(model, "decoder")
    report = composer.export(decoder, tmp_path / "decoder.onnx")
    assert report["verification"]["passed"]
    z = torch.randn(3, 64)
    got = torch.as_tensor(Session(tmp_path / "decoder.onnx", device="cpu").run({"z": z.numpy()})["reconstruction"])
    with torch.no_grad():
        want = decoder(z=z)["reconstruction"]
    assert (got - want).abs().max().item() < 1e-5
