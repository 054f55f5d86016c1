"""Model registry: every architecture is built by name with `get_model`.

    get_model("ResNet18", num_classes=10, in_channels=3, pretrained=False)
    list_models()  # ["AllCNN", "MobileNet_v2", "ResNet18", "ResNet9", "SmallCNN"]

Each builder takes (num_classes, in_channels, pretrained) and returns an nn.Module mapping
(N, in_channels, H, W) images to (N, num_classes) logits. `pretrained=None` means the model's
own default (ImageNet weights for the two torchvision models, as in the paper).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[[int, int, bool], nn.Module]
    pretrained_default: bool  # has ImageNet weights, used by default as in the paper
    version: int = 1  # raised whenever the architecture changes; part of the model cache's key


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, pretrained_default: bool = False, version: int = 1):
    def decorate(build):
        _REGISTRY[name] = ModelEntry(build, pretrained_default, version)
        return build
    return decorate


def first_conv_padding(in_channels: int) -> int:
    """The authors' padding p0 of the first conv (docs/METHOD.md): 0 for 3-channel 32x32 data, 2 for
    1-channel 28x28 data, so both reach 30x30."""
    return 0 if in_channels == 3 else 2


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name]


def resolve_pretrained(name: str, pretrained: bool | None) -> bool:
    return get_model_entry(name).pretrained_default if pretrained is None else pretrained


def get_model(name: str, num_classes: int, in_channels: int, pretrained: bool | None = None) -> nn.Module:
    entry = get_model_entry(name)
    if pretrained and not entry.pretrained_default:
        raise UserError(f"{name} has no pretrained weights (the paper trains it from scratch); "
                        f"drop --pretrained")
    return entry.build(num_classes, in_channels, resolve_pretrained(name, pretrained))


# Importing the modules registers their models.
from models import allcnn, resnet9, small_cnn, torchvision_models  # noqa: E402,F401
