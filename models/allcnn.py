"""AllCNN as the authors built it (docs/METHOD.md "The authors' architectures"): eight bias-free
convs, each followed by BatchNorm and ReLU, no dropout, an average pool and one linear layer;
trained from scratch. 1,620,010 parameters at 3x32x32 with 10 classes, 1,618,282 at 1x28x28."""
from torch import nn

from models import first_conv_padding, register_model

WIDTHS = (96, 192)


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_model("AllCNN", version=2)  # version 1: Golatkar et al.'s variant with dropout and a conv head
def allcnn(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    narrow, wide = WIDTHS
    return nn.Sequential(
        conv_bn(in_channels, narrow, padding=first_conv_padding(in_channels)),
        conv_bn(narrow, narrow), conv_bn(narrow, wide, stride=2),
        conv_bn(wide, wide), conv_bn(wide, wide), conv_bn(wide, wide, stride=2),
        conv_bn(wide, wide), conv_bn(wide, wide, kernel=1, padding=0),
        nn.AvgPool2d(8 if in_channels == 3 else 7),  # 8x8 maps (32x32 input) or 7x7 (28x28), as the authors pool
        nn.Flatten(), nn.Linear(wide, num_classes),
    )
