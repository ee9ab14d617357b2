"""The generator paper's eight target classifiers, adapted to 32x32 input.

Ye et al. (MMSys'22, the protective perturbation generator) attack VGG13_bn,
VGG16_bn, ResNet18, ResNet34, DenseNet121, MobileNetV2, GoogLeNet and InceptionV3
trained on CIFAR-10-sized images. These are the usual CIFAR adaptations (3x3 stems,
no early max-pool / stride so the 32x32 map is kept until the first stage ends):

* VGG: five conv stages, each ended by a 2x2 max-pool (32 -> 1), one linear layer.
* ResNet: 3x3 stem, four stages of basic blocks (strides 1, 2, 2, 2; 32 -> 4).
* DenseNet121: growth 32, blocks (6, 12, 24, 16), compression 0.5, 3x3 stem.
* MobileNetV2: stride-1 stem and stride 1 in the second stage (32 -> 4).
* GoogLeNet: 3x3 stem with 192 channels, inception 3a..5b (32 -> 8).
* InceptionV3: 3x3 stem with 192 channels, Mixed 5b..7c with padded stride-2
  reductions (32 -> 16 -> 8).

Every network takes ``(N, in_channels, 32, 32)`` float pixels in ``[0, 1]`` and returns
``(N, num_classes)`` logits. It normalises internally with fixed ``mean``/``std`` buffers
(no normalisation is baked into the data) because the protectors work in ``[0, 1]``
pixel space and differentiate through the model. ``width`` scales every channel count
(``max(MIN_CHANNELS, round(c * width))``) so that CPU training stays practical. Pooling is
written as ``mean``/fixed-size ops so every model is ``torch.export``-able.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MIN_CHANNELS = 4  # below this BN statistics and 1x1 bottlenecks become degenerate


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by ``width``, at least :data:`MIN_CHANNELS`."""
    return max(MIN_CHANNELS, int(round(channels * width)))


class Normalize(nn.Module):
    """Fixed per-channel ``(x - mean) / std`` (buffers, so it exports as constants)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class ZooNet(nn.Module):
    """Base: input normalisation + ``features`` + linear ``classifier``.

    ``features(x)`` returns the pooled ``(N, C)`` embedding (useful to FMD-style feature
    losses); ``forward`` returns logits.
    """

    def __init__(self, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        mean = tuple(mean) if mean is not None else (0.5,) * in_channels
        std = tuple(std) if std is not None else (0.25,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values (one per input channel), got {mean}, {std}")
        self.normalize = Normalize(mean, std)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_bn(cin: int, cout: int, kernel=3, stride=1, padding=None, groups=1, relu=True, eps=1e-5) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU); ``kernel`` may be a tuple, padding defaults to 'same'."""
    if padding is None:
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))


# --------------------------------------------------------------------------- VGG

VGG_CFG = {
    "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(ZooNet):
    """VGG with batch norm (Simonyan & Zisserman); five 2x2 pools take 32x32 to 1x1."""

    def __init__(self, cfg: str, num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        layers, cin = [], in_channels
        for v in VGG_CFG[cfg]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = scaled(v, width)
                layers.append(conv_bn(cin, cout))
                cin = cout
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x):
        return global_pool(self.body(x))


# ------------------------------------------------------------------------ ResNet

class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut (He et al.)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, relu=False)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, 0, relu=False)

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(ZooNet):
    """CIFAR ResNet: 3x3 stem (no max-pool), stages of 64/128/256/512 x width."""

    def __init__(self, blocks: Sequence[int], num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        cin = scaled(64, width)
        self.stem = conv_bn(in_channels, cin)
        # torchvision's names (layer1..layer4), so feature taps such as FMD's "layer2" carry over
        for i, (n, c) in enumerate(zip(blocks, (64, 128, 256, 512))):
            cout = scaled(c, width)
            stage = []
            for j in range(n):
                stage.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x):
        x = self.stem(x)
        return global_pool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


# ---------------------------------------------------------------------- DenseNet

class DenseLayer(nn.Module):
    """BN-ReLU-1x1(4k)-BN-ReLU-3x3(k), output concatenated to the input (Huang et al.)."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        return torch.cat([self.body(x), x], dim=1)


class DenseNet(ZooNet):
    """DenseNet-BC; ``width`` scales the growth rate (32) and hence every channel count."""

    def __init__(self, blocks=(6, 12, 24, 16), num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        growth = scaled(32, width)
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(blocks) - 1:  # transition: compress 0.5 and halve the map
                cout = c // 2
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, cout, 1, bias=False), nn.AvgPool2d(2)]
                c = cout
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def embed(self, x):
        return global_pool(self.body(x))


# ------------------------------------------------------------------- MobileNetV2

class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1; residual when shapes match (Sandler et al.)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn(cin, hidden, 1, padding=0)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, padding=0, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.body(x)
        return out + x if self.residual else out


# (expansion, out channels, blocks, first stride); the second stage's stride is 1 for 32x32.
MOBILENET_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(ZooNet):
    """MobileNetV2 with a stride-1 stem (32 -> 4 over the network)."""

    def __init__(self, num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        cin = scaled(32, width)
        layers: list[nn.Module] = [conv_bn(in_channels, cin)]
        for t, c, n, s in MOBILENET_V2_CFG:
            cout = scaled(c, width)
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
        last = scaled(1280, max(1.0, width))  # as in the paper: the last conv is not thinned below 1280
        layers.append(conv_bn(cin, last, 1, padding=0))
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def embed(self, x):
        return global_pool(self.body(x))


# --------------------------------------------------------------------- GoogLeNet

class GoogLeInception(nn.Module):
    """Inception v1 module: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 (for 5x5) | maxpool-1x1 (Szegedy et al.)."""

    def __init__(self, cin, n1, n3r, n3, n5r, n5, npool, width):
        super().__init__()
        n1, n3r, n3, n5r, n5, npool = (scaled(c, width) for c in (n1, n3r, n3, n5r, n5, npool))
        self.b1 = conv_bn(cin, n1, 1, padding=0)
        self.b2 = nn.Sequential(conv_bn(cin, n3r, 1, padding=0), conv_bn(n3r, n3))
        self.b3 = nn.Sequential(conv_bn(cin, n5r, 1, padding=0), conv_bn(n5r, n5), conv_bn(n5, n5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, npool, 1, padding=0))
        self.out_channels = n1 + n3 + n5 + npool

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


GOOGLENET_CFG = [  # (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool proj) or "M"
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


class GoogLeNet(ZooNet):
    """GoogLeNet (inception 3a..5b) with a 3x3/192 stem at full 32x32 resolution."""

    def __init__(self, num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        cin = scaled(192, width)
        layers: list[nn.Module] = [conv_bn(in_channels, cin)]
        for spec in GOOGLENET_CFG:
            if spec == "M":
                layers.append(nn.MaxPool2d(3, 2, 1))
            else:
                block = GoogLeInception(cin, *spec, width=width)
                layers.append(block)
                cin = block.out_channels
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x):
        return global_pool(self.body(x))


# ------------------------------------------------------------------- InceptionV3

def _bc(cin, cout, kernel=1, stride=1, padding=None):
    return conv_bn(cin, cout, kernel, stride, padding, eps=1e-3)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features, w):
        super().__init__()
        c64, c48, c96, cp = scaled(64, w), scaled(48, w), scaled(96, w), scaled(pool_features, w)
        self.b1 = _bc(cin, c64)
        self.b5 = nn.Sequential(_bc(cin, c48), _bc(c48, c64, 5))
        self.b3 = nn.Sequential(_bc(cin, c64), _bc(c64, c96, 3), _bc(c96, c96, 3))
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), _bc(cin, cp))
        self.out_channels = 2 * c64 + c96 + cp

    def forward(self, x):
        return torch.cat([self.b1(x), self.b5(x), self.b3(x), self.bp(x)], 1)


class InceptionB(nn.Module):
    """Grid reduction 35->17 in the paper; here padded so 32 -> 16."""

    def __init__(self, cin, w):
        super().__init__()
        c384, c64, c96 = scaled(384, w), scaled(64, w), scaled(96, w)
        self.b3 = _bc(cin, c384, 3, 2, 1)
        self.bd = nn.Sequential(_bc(cin, c64), _bc(c64, c96, 3), _bc(c96, c96, 3, 2, 1))
        self.bp = nn.MaxPool2d(3, 2, 1)
        self.out_channels = c384 + c96 + cin

    def forward(self, x):
        return torch.cat([self.b3(x), self.bd(x), self.bp(x)], 1)


class InceptionC(nn.Module):
    """Factorised 7x7 (1x7 / 7x1) module."""

    def __init__(self, cin, c7, w):
        super().__init__()
        c192, c7 = scaled(192, w), scaled(c7, w)
        self.b1 = _bc(cin, c192)
        self.b7 = nn.Sequential(_bc(cin, c7), _bc(c7, c7, (1, 7)), _bc(c7, c192, (7, 1)))
        self.b7d = nn.Sequential(_bc(cin, c7), _bc(c7, c7, (7, 1)), _bc(c7, c7, (1, 7)),
                                 _bc(c7, c7, (7, 1)), _bc(c7, c192, (1, 7)))
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), _bc(cin, c192))
        self.out_channels = 4 * c192

    def forward(self, x):
        return torch.cat([self.b1(x), self.b7(x), self.b7d(x), self.bp(x)], 1)


class InceptionD(nn.Module):
    """Grid reduction 17->8 in the paper; here padded so 16 -> 8."""

    def __init__(self, cin, w):
        super().__init__()
        c192, c320 = scaled(192, w), scaled(320, w)
        self.b3 = nn.Sequential(_bc(cin, c192), _bc(c192, c320, 3, 2, 1))
        self.b7 = nn.Sequential(_bc(cin, c192), _bc(c192, c192, (1, 7)), _bc(c192, c192, (7, 1)), _bc(c192, c192, 3, 2, 1))
        self.bp = nn.MaxPool2d(3, 2, 1)
        self.out_channels = c320 + c192 + cin

    def forward(self, x):
        return torch.cat([self.b3(x), self.b7(x), self.bp(x)], 1)


class InceptionE(nn.Module):
    """Expanded-filter-bank module with split 1x3 / 3x1 outputs."""

    def __init__(self, cin, w):
        super().__init__()
        c320, c384, c448, c192 = scaled(320, w), scaled(384, w), scaled(448, w), scaled(192, w)
        self.b1 = _bc(cin, c320)
        self.b3 = _bc(cin, c384)
        self.b3a, self.b3b = _bc(c384, c384, (1, 3)), _bc(c384, c384, (3, 1))
        self.bd = nn.Sequential(_bc(cin, c448), _bc(c448, c384, 3))
        self.bda, self.bdb = _bc(c384, c384, (1, 3)), _bc(c384, c384, (3, 1))
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), _bc(cin, c192))
        self.out_channels = c320 + 4 * c384 + c192

    def forward(self, x):
        b3, bd = self.b3(x), self.bd(x)
        return torch.cat([self.b1(x), self.b3a(b3), self.b3b(b3), self.bda(bd), self.bdb(bd), self.bp(x)], 1)


class InceptionV3(ZooNet):
    """InceptionV3 (Szegedy et al. 2016), Mixed_5b..Mixed_7c, 3x3/192 stem at 32x32, no aux head."""

    def __init__(self, num_classes=10, in_channels=3, width=1.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        w = width
        cin = scaled(192, w)
        layers: list[nn.Module] = [_bc(in_channels, cin, 3)]

        def add(block):
            nonlocal cin
            layers.append(block)
            cin = block.out_channels

        for pf in (32, 64, 64):
            add(InceptionA(cin, pf, w))
        add(InceptionB(cin, w))
        for c7 in (128, 160, 160, 192):
            add(InceptionC(cin, c7, w))
        add(InceptionD(cin, w))
        add(InceptionE(cin, w))
        add(InceptionE(cin, w))
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x):
        return global_pool(self.body(x))
