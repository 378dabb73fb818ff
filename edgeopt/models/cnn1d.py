"""A 1-D CNN for sequence classification (e.g. the MNIST-1D-style signals of ``edgeopt.models.data``).

Four conv-BN-ReLU stages (kernel 5; the last three halve the length), global average pooling, a
hidden Linear layer and the head.
"""

from __future__ import annotations

from torch import nn

__all__ = ["CNN1D", "cnn1d"]


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, stride=stride, padding=2, bias=False), nn.BatchNorm1d(cout), nn.ReLU())


class CNN1D(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 64, 128),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        stages, cin = [], in_channels
        for i, w in enumerate(widths):
            stages.append(_stage(cin, w, 1 if i == 0 else 2))
            cin = w
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(cin, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.flatten(self.pool(self.features(x))))))


def cnn1d(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> CNN1D:
    """Channels 32/64/64/128 (``width`` scales them), hidden 128: about 90K parameters."""
    widths = tuple(max(4, int(round(c * width))) for c in (32, 64, 64, 128))
    return CNN1D(num_classes, in_channels, widths, max(8, int(round(128 * width))))
