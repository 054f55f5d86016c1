"""All-CNN-C (Springenberg et al., 2015) with batch norm, as in the unlearning literature
(Golatkar et al., 2020) that the paper's config follows; trained from scratch."""
from torch import nn

from models import register_model


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_model("AllCNN")
def allcnn(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return nn.Sequential(
        conv_bn(in_channels, 96), conv_bn(96, 96), conv_bn(96, 96, stride=2), nn.Dropout(0.5),
        conv_bn(96, 192), conv_bn(192, 192), conv_bn(192, 192, stride=2), nn.Dropout(0.5),
        conv_bn(192, 192), conv_bn(192, 192, kernel=1), nn.Conv2d(192, num_classes, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
