"""SmallCNN: ours, not the paper's. Two conv blocks and an MLP head; trains on mnist5k in
seconds on a CPU, which makes it the default model of the embedded data set."""
from torch import nn

from models import register_model


@register_model("SmallCNN")
def small_cnn(num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(7),  # 28x28 and 32x32 inputs both end at 7x7
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )
