"""Vision blocks: CNN and ViT backbones and the parts they are made of (torchvision-compatible)."""
from . import densenet, inception, resnet  # noqa: F401
from . import efficientnet, layers, mobilenet, vit  # noqa: F401
