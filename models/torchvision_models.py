"""ResNet18 and MobileNet_v2: torchvision's architectures, as in the paper.

With `pretrained`, they start from torchvision's IMAGENET1K_V1 weights adapted as the paper
does: for 1-channel data the first convolution's kernels are summed over RGB and divided by 3,
and the 1000-way classifier is cut to its first `num_classes` rows.
"""
from __future__ import annotations

import torch
from torch import nn

from errors import UserError
from models import register_model

# name: (torchvision.models' builder, its weights enum (IMAGENET1K_V1), first conv key, classifier key);
# by name: torchvision is imported only when one is built (it takes seconds, and most runs never do)
_ARCHITECTURES = {
    "ResNet18": ("resnet18", "ResNet18_Weights", "conv1.weight", "fc"),
    "MobileNet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", "features.0.0.weight", "classifier.1"),
}


def adapt_imagenet_state_dict(state: dict[str, torch.Tensor], first_conv: str, classifier: str,
                              in_channels: int, num_classes: int) -> dict[str, torch.Tensor]:
    """The paper's adaptation of ImageNet weights to `in_channels` inputs and `num_classes` outputs."""
    state = dict(state)
    if in_channels == 1:
        state[first_conv] = state[first_conv].sum(dim=1, keepdim=True) / 3
    elif in_channels != 3:
        raise ValueError(f"ImageNet weights take 1- or 3-channel input, not {in_channels}")
    for suffix in ("weight", "bias"):
        state[f"{classifier}.{suffix}"] = state[f"{classifier}.{suffix}"][:num_classes]
    return state


def _replace_first_conv(model: nn.Module, name: str, in_channels: int) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: nn.Conv2d = getattr(parent, attr)
    setattr(parent, attr, nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                    old.padding, bias=old.bias is not None))


def _build(name: str, num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    import torchvision
    builder, weights, first_conv, classifier = _ARCHITECTURES[name]
    model = getattr(torchvision.models, builder)(num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, first_conv.rsplit(".", 1)[0], in_channels)
    if pretrained:
        try:
            state = getattr(torchvision.models, weights).IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:  # no network, proxy, corrupt download: all mean the same here
            raise UserError(f"could not fetch the ImageNet weights of {name} ({type(error).__name__}: "
                            f"{error}); run with --no-pretrained to train from scratch") from None
        model.load_state_dict(adapt_imagenet_state_dict(state, first_conv, classifier,
                                                        in_channels, num_classes))
    return model


@register_model("ResNet18", pretrained_default=True)
def resnet18(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return _build("ResNet18", num_classes, in_channels, pretrained)


@register_model("MobileNet_v2", pretrained_default=True)
def mobilenet_v2(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return _build("MobileNet_v2", num_classes, in_channels, pretrained)
