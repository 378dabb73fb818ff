"""A MobileNetV2-style network for 32x32 inputs: depthwise-separable inverted-residual blocks.

Each block expands with a 1x1 conv (t times the channels), filters with a 3x3 depthwise conv and
projects back with a linear 1x1 conv; a residual connects blocks of equal shape (Sandler et al.,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018). At width 1.0 it has 1.05M
parameters (42M multiply-adds at 32x32) and 40 layers ``decompose`` can change (the 1x1 convs, the
stem and the classifier); the 19 depthwise convs are left dense.
"""

from __future__ import annotations

from torch import nn

__all__ = ["InvertedResidual", "MobileNet", "mobilenet"]

# (expansion t, output channels c, repeats n, first stride s): MobileNetV2's table, channels narrowed and two
# blocks added so that it has ~1M parameters and 40 decomposable layers; strides 1-2-2-1-1-2-1 for 32x32 inputs.
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 48, 5, 1), (6, 64, 4, 1), (6, 104, 3, 2), (6, 208, 1, 1))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, last: int = 480, blocks=_BLOCKS
    ) -> None:
        super().__init__()
        c = lambda v: max(4, int(round(v * width)))  # noqa: E731
        cin = c(32)
        self.stem = _conv_bn(in_channels, cin, 3)
        features = []
        for t, ch, n, s in blocks:
            for i in range(n):
                features.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                cin = c(ch)
        self.features = nn.Sequential(*features)
        self.head = _conv_bn(cin, c(last), 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(c(last), num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.features(self.stem(x))))
        return self.fc(self.dropout(self.flatten(x)))


def mobilenet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> MobileNet:
    """The MobileNetV2-style model; ``width`` scales every channel count (tests use a small one)."""
    return MobileNet(num_classes, in_channels, width)
