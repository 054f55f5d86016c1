"""ResNet9 (Myrtle.ai's DAWNBench network, as used in the paper's config), from scratch."""
from torch import nn

from models import register_model


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


@register_model("ResNet9")
def resnet9(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return nn.Sequential(
        conv_bn(in_channels, 64), conv_bn(64, 128, pool=True), Residual(128),
        conv_bn(128, 256, pool=True), conv_bn(256, 512, pool=True), Residual(512),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(512, num_classes),
    )
