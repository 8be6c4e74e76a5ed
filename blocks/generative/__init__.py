"""Generative model blocks: GAN generators and discriminators (`gan`), variational autoencoders
(`vae`), the diffusion UNet (`unet`) and normalizing flows (`flows`). Plain layers they are made
of (transposed convs, upsampling, group norm, reshape) live in `blocks/core`."""

from . import flows, gan, unet, vae  # noqa: F401
