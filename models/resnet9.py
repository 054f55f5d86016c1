"""ResNet9 as the authors built it (docs/METHOD.md "The authors' architectures"): bias-free convs with
BatchNorm (momentum 0.9) and ReLU, two residual blocks, four max-pools and one linear layer;
trained from scratch. 2,440,266 parameters at 3x32x32 with 10 classes, 2,439,114 at 1x28x28."""
from torch import nn

from models import first_conv_padding, register_model

BN_MOMENTUM = 0.9  # the authors' BatchNorm2d(momentum=0.9): the new batch's statistics weigh 0.9


def conv_bn(c_in: int, c_out: int, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False), nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True)]


class Residual(nn.Module):
    """x + ReLU(BN(conv(ReLU(BN(conv(x)))))): the ReLU comes before the addition, none after it."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels, momentum=BN_MOMENTUM), nn.ReLU())

    def forward(self, x):
        return x + self.body(x)


@register_model("ResNet9", version=2)  # version 1: Myrtle.ai's DAWNBench ResNet9 (widths up to 512)
def resnet9(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return nn.Sequential(
        *conv_bn(in_channels, 64, padding=first_conv_padding(in_channels)), *conv_bn(64, 128), nn.MaxPool2d(2),
        Residual(128), *conv_bn(128, 256), nn.MaxPool2d(2), *conv_bn(256, 256), nn.MaxPool2d(2),
        Residual(256), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, num_classes),
    )
