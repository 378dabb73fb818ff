"""Architectures written in this repository, for examples, tests and benchmarks (no torchvision).

``ARCHITECTURES`` names each model with its dataset and the training recipe the bundled examples
use; ``edgeopt.models.data`` makes the datasets offline.

====================  =========================================  ========  ====================
name                  model                                      params    data
====================  =========================================  ========  ====================
``resnet8``           MLPerf Tiny's ResNet-8 (16/32/64 channels)  78K      digits as 32x32 RGB
``mobilenet``         MobileNetV2-style, depthwise blocks         1.05M    digits as 32x32 RGB
``vit``               ViT on nn.MultiheadAttention, 4x128         0.56M    digits as 32x32 RGB
``cnn1d``             1-D CNN, 4 conv stages                      90K      MNIST-1D-style signals
====================  =========================================  ========  ====================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ARCHITECTURES", "Architecture"]


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    build: Callable[[], object]  # () -> nn.Module at the real size
    data: Callable[[], tuple]  # () -> (train, val, test), each (X, y)
    input_shape: tuple[int, ...]  # one sample, without the batch
    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    schedule: str = "cosine"


def _resnet8():
    from edgeopt.models.resnet8 import resnet8

    return resnet8()


def _mobilenet():
    from edgeopt.models.mobilenet import mobilenet

    return mobilenet()


def _vit():
    from edgeopt.models.vit import vit

    return vit()


def _cnn1d():
    from edgeopt.models.cnn1d import cnn1d

    return cnn1d()


def _digits32():
    from edgeopt.models.data import digits32

    return digits32(train_copies=2)  # the training digits rendered twice (shifts, colours): a cheap augmentation


def _digits32_once():
    from edgeopt.models.data import digits32

    return digits32(train_copies=1)  # the costlier models: one rendering keeps training under ~2 minutes


def _signals():
    from edgeopt.models.data import signals1d

    return signals1d()


ARCHITECTURES: dict[str, Architecture] = {
    "resnet8": Architecture(
        "resnet8",
        "ResNet-8 like MLPerf Tiny's (78K parameters) on digits as 32x32 RGB images",
        _resnet8,
        _digits32,
        (3, 32, 32),
        epochs=12,
        lr=3e-3,
    ),
    "mobilenet": Architecture(
        "mobilenet",
        "MobileNetV2-style (1.05M parameters, 40 decomposable layers, depthwise blocks) on digits as 32x32 RGB images",
        _mobilenet,
        _digits32_once,
        (3, 32, 32),
        epochs=6,
        lr=3e-3,
    ),
    "vit": Architecture(
        "vit",
        "ViT on nn.MultiheadAttention (4 layers, width 128, 8x8 patches, 0.56M parameters) on digits as "
        "32x32 RGB images",
        _vit,
        _digits32,
        (3, 32, 32),
        epochs=20,
        lr=2e-3,
        weight_decay=1e-4,
    ),
    "cnn1d": Architecture(
        "cnn1d", "1-D CNN (90K parameters) on MNIST-1D-style signals", _cnn1d, _signals, (1, 64), epochs=15, lr=3e-3
    ),
}
