"""Vision blocks: CNN and ViT backbones and the parts they are made of (torchvision-compatible)."""
from . import resnet  # noqa: F401
