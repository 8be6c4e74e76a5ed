"""DCGAN (Radford et al., 2016): `dcgan_generator` (a latent code to an image by transposed convs)
and `dcgan_discriminator` (an image to a real/fake logit by strided convs).

Both build an `nn.Sequential` whose layer indices are those of the usual plain-PyTorch DCGAN
(`nn.Sequential(ConvTranspose2d, BatchNorm2d, ReLU, ..., Tanh)`), so such a model's state dict
loads into them under the block's prefix, by name or by module structure (`composer.weights`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from blocks.core.norm import with_spectral_norm
from composer.block import Block, In
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType, expect_float, expect_rank, expect_static

LEAK = 0.2  # DCGAN's LeakyReLU slope in the discriminator


def _doublings(size: int, param: str, port: str | None = None) -> int:
    """How many stride-2 layers lie between 4x4 and size x size: log2(size) - 2 (size a power of 2, >= 8)."""
    if size < 8 or size & (size - 1):
        raise InferError(f"a DCGAN works on square images whose side is a power of 2 (8, 16, 32, 64, ...), not {size}",
                         param=param if port is None else None, port=port, expected="a power of 2, at least 8",
                         found=str(size))
    return size.bit_length() - 3


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), batchnorm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGeneratorNet(nn.Sequential):
    """The generator's layers; a flat code [B, Z] is viewed as [B, Z, 1, 1] first."""

    def __init__(self, *layers: nn.Module, flat: bool):
        super().__init__(*layers)
        self.flat = flat

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.flat:
            z = z[:, :, None, None]                                 # (B, Z, 1, 1)
        return super().forward(z)                                   # (B, C, S, S)


@register
class DCGANGenerator(Block):
    """DCGAN generator: a latent code [B, Z] or [B, Z, 1, 1] to an image [B, channels, size, size] in [-1, 1].

    ConvTranspose2d(Z, w·2^(n-1), k4 s1 p0) takes 1x1 to 4x4, then n = log2(size) - 2 transposed convs
    (k4 s2 p1) double the side while halving the channels down to `width` (ngf), each but the last
    followed by BatchNorm2d and ReLU; the last maps to `channels` and a Tanh. Convs have no bias. For
    size 64, width 64, Z 100 that is the paper's 3,576,704-parameter generator. `spectral_norm`
    normalises every transposed conv's weight (batchnorm kept); `init: dcgan` draws weights as DCGAN
    does (N(0, 0.02)), `init: torch` keeps torch's defaults.
    """
    name: ClassVar[str] = "dcgan_generator"
    family: ClassVar[str] = "generative"
    inputs: ClassVar = {"z": In("latent", doc="[B, Z] or [B, Z, 1, 1], drawn from N(0, I)")}
    example: ClassVar = {"params": {"size": 8, "width": 4}, "inputs": {"z": PortType("latent", (2, 16))}}
    channels: PosInt = 3
    size: PosInt = 64
    width: PosInt = 64
    spectral_norm: bool = False
    init: Literal["dcgan", "torch"] = "dcgan"

    def _plan(self, z: PortType) -> tuple[int, list[int]]:
        """(Z, the channels after each layer)."""
        expect_rank(z, (2, 4), "z", " [B, Z] or [B, Z, 1, 1]")
        expect_float(z, "z")
        if z.rank == 4 and tuple(z.shape[2:]) != (1, 1):
            raise InferError("a latent code of rank 4 must be [B, Z, 1, 1]", port="z", code="E302",
                             expected="[B, Z, 1, 1]", found=str(z))
        zdim = expect_static(z.shape[1], "z", "the latent size Z")
        n = _doublings(self.size, "size")
        return zdim, [self.width * 2 ** (n - 1 - i) for i in range(n)] + [self.channels]

    def infer(self, z: PortType) -> PortType:
        self._plan(z)
        return PortType("image", (z.shape[0], self.channels, self.size, self.size), z.dtype)

    def param_count(self, z: PortType) -> int:
        zdim, chans = self._plan(z)
        convs = sum(a * b * 16 for a, b in zip([zdim, *chans], chans))
        return convs + 2 * sum(chans[:-1])

    def build(self, z: PortType) -> nn.Module:
        zdim, chans = self._plan(z)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([zdim, *chans], chans)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers.append(nn.ConvTranspose2d(a, b, 4, stride, pad, bias=False))
            layers += [nn.BatchNorm2d(b), nn.ReLU(True)] if i < len(chans) - 1 else [nn.Tanh()]
        module = DCGANGeneratorNet(*layers, flat=z.rank == 2)
        if self.init == "dcgan":
            _dcgan_init(module)
        for m in module:
            if isinstance(m, nn.ConvTranspose2d):
                with_spectral_norm(m, self.spectral_norm)
        return module


@register
class DCGANDiscriminator(Block):
    """DCGAN discriminator: an image [B, C, S, S] to one real/fake logit per image [B, 1].

    n = log2(S) - 2 convs (k4 s2 p1, no bias) halve the side down to 4x4 while doubling the channels
    from `width` (ndf), each followed by LeakyReLU(0.2) and, from the second on, BatchNorm2d; a last
    conv (k4 s1 p0) maps 4x4 to one logit. The side S must be a power of 2 from 8 on, fixed in the
    input type. For S 64 and width 64 it is the paper's 2,765,568-parameter discriminator, without its
    final Sigmoid (train with a logits loss: BCE-with-logits, hinge). `spectral_norm: true` is
    SN-GAN's variant: every conv spectrally normalised and no batchnorm.
    """
    name: ClassVar[str] = "dcgan_discriminator"
    family: ClassVar[str] = "generative"
    inputs: ClassVar = {"x": In("feature_map", doc="[B, C, S, S], an image (or a generator's output)")}
    example: ClassVar = {"params": {"width": 4}, "inputs": {"x": PortType("image", (2, 3, 16, 16))}}
    width: PosInt = 64
    spectral_norm: bool = False
    init: Literal["dcgan", "torch"] = "dcgan"

    def _plan(self, x: PortType) -> tuple[int, list[int]]:
        """(input channels, the channels after each strided conv)."""
        expect_rank(x, 4, "x", " [B, C, S, S]")
        expect_float(x, "x")
        c = expect_static(x.shape[1], "x", "the channel count of a dcgan_discriminator input")
        h = expect_static(x.shape[2], "x", "the image height of a dcgan_discriminator input")
        w = expect_static(x.shape[3], "x", "the image width of a dcgan_discriminator input")
        if h != w:
            raise InferError(f"a DCGAN discriminator takes square images, not {h}x{w}", port="x", code="E302",
                             expected="[B, C, S, S]", found=str(x))
        n = _doublings(h, "x", port="x")
        return c, [self.width * 2 ** i for i in range(n)]

    def infer(self, x: PortType) -> PortType:
        self._plan(x)
        return PortType("logits", (x.shape[0], 1), x.dtype)

    def param_count(self, x: PortType) -> int:
        c, chans = self._plan(x)
        convs = sum(a * b * 16 for a, b in zip([c, *chans], [*chans, 1]))
        return convs + (0 if self.spectral_norm else 2 * sum(chans[1:]))

    def build(self, x: PortType) -> nn.Module:
        c, chans = self._plan(x)
        sn = self.spectral_norm
        convs: list[nn.Conv2d] = []
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([c, *chans], chans)):
            convs.append(nn.Conv2d(a, b, 4, 2, 1, bias=False))
            layers.append(convs[-1])
            if i > 0 and not sn:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.LeakyReLU(LEAK, inplace=True))
        convs.append(nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False))
        module = nn.Sequential(*layers, convs[-1], nn.Flatten(1))   # (B, 1, 1, 1) -> (B, 1)
        if self.init == "dcgan":
            _dcgan_init(module)
        for conv in convs:
            with_spectral_norm(conv, sn)
        return module
