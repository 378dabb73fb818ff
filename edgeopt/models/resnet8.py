"""ResNet-8 as in MLPerf Tiny's image-classification benchmark (CIFAR-10 sized, about 78K parameters).

A 3x3 stem conv to 16 channels, then three stacks of one residual block each (16, 32, 64
channels; the second and third downsample by 2 with a 1x1 projection shortcut), global average
pooling and a Linear head. Every conv is followed by BatchNorm (Banbury et al., "MLPerf Tiny
Benchmark", 2021; the reference is a Keras model, this is the same topology in torch).
"""

from __future__ import annotations

from torch import nn

__all__ = ["BasicBlock", "ResNet8", "resnet8"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (identity, or 1x1 conv-BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class ResNet8(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.stack1 = BasicBlock(w1, w1, 1)
        self.stack2 = BasicBlock(w1, w2, 2)
        self.stack3 = BasicBlock(w2, w3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x):
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def resnet8(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> ResNet8:
    """MLPerf Tiny's ResNet-8 (width 1.0: 16/32/64 channels); ``width`` scales the channels (tests use less)."""
    widths = tuple(max(4, int(round(c * width))) for c in (16, 32, 64))
    return ResNet8(num_classes, in_channels, widths)
