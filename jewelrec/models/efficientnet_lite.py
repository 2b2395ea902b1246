"""EfficientNet-Lite0 and Lite1 in plain torch, key-compatible with the packages' `.pth` files.

Lite = EfficientNet-B0 made mobile friendly: ReLU6 instead of swish, no squeeze-excite, stem and
head widths fixed. Convolutions use TensorFlow "SAME" padding (the weights were trained in TF): at
stride 2 the extra pixel goes on the right/bottom, which PyTorch's symmetric padding gets wrong.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from jewelrec.models.backbone import BACKBONE as LITE0
from jewelrec.models.backbone import LITE1

# (expand ratio, kernel, stride, out channels, repeats) per stage; 16 blocks in all.
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
# Blocks per stage of each network we have weights for. Lite1 is Lite0 made 1.1x deeper (widths,
# stem and head unchanged; the first and last stages keep one block): 21 blocks, trained at 240 px.
REPEATS = {LITE0: tuple(stage[4] for stage in STAGES), LITE1: (1, 3, 3, 4, 4, 5, 1)}
LAST_STAGES = 2  # the 1/32 stages (192 and 320 channels): what the tuned type head retrains
FEATURE_DIM = 1280
NUM_CLASSES = 1000


def last_stages_start(network: str) -> int:
    """The first block of the network's last two stages (Lite0: 11, Lite1: 15)."""
    return sum(REPEATS[network][:-LAST_STAGES])


class SameConv2d(nn.Conv2d):
    """Conv2d, no bias, padded so out = ceil(in / stride), any odd pad on the right/bottom."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        # at stride 1 (odd kernels) "SAME" is symmetric: the conv pads by itself
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []  # F.pad order: left, right, top, bottom
        for size, k, s in ((x.shape[3], self.kernel_size[1], self.stride[1]),
                           (x.shape[2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF's epsilon and decay 0.99


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ skip when shapes match)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv2d(cin, mid, 1), bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = bn(mid)
        self._project_conv, self._bn2 = SameConv2d(mid, cout, 1), bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, cin, H, W)
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (N, mid, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (N, mid, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (N, cout, H/s, W/s), linear bottleneck
        return x + h if self.skip else h


def gem(maps: torch.Tensor, power: float) -> torch.Tensor:
    """Generalised-mean pooling of non-negative maps (N, C, h, w) -> (N, C); the torch twin of
    models/backbone.py's numpy pooling, for the stages trained on the catalog."""
    return maps.clamp(min=1e-6).pow(power).mean(dim=(2, 3)).pow(1.0 / power)


def channels_last(x: torch.Tensor | nn.Module) -> torch.Tensor | nn.Module:
    """A batch of maps, or a network, in NHWC memory layout (same values): the last stages train
    about 1.5x faster on CPU that way (a step of 48 Lite1 maps at 256 px on 2 AVX2 cores:
    1.6 -> 1.1 s), their depthwise convolutions reading each pixel's channels together."""
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0, or with `network=LITE1` its deeper sibling (same layer names)."""

    def __init__(self, num_classes: int = NUM_CLASSES, network: str = LITE0):
        super().__init__()
        self._conv_stem, self._bn0 = SameConv2d(3, 32, 3, stride=2), bn(32)
        blocks, cin = [], 32
        for (expand, kernel, stride, cout, _), repeats in zip(STAGES, REPEATS[network],
                                                               strict=True):
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv2d(cin, FEATURE_DIM, 1), bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)  # dropout 0.2 before it only in training

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) normalised RGB -> (N, 1280, 7, 7) last feature map, non-negative
        (any input size: the map is ceil(size / 32) on each side)."""
        return self.stage(self.trunk(x, len(self._blocks)), len(self._blocks))

    def trunk(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """Normalised RGB -> the output of the stem and blocks 0..blocks-1."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, 112, 112)
        for block in self._blocks[:blocks]:
            x = block(x)
        return x

    def stage(self, x: torch.Tensor, first_block: int) -> torch.Tensor:
        """`trunk(x, first_block)` -> the last feature map: blocks first_block.. and the head
        convolution (..., (N, 320, 7, 7) -> (N, 1280, 7, 7) at 224 px)."""
        for block in self._blocks[first_block:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) normalised RGB -> (N, 1280) globally average-pooled, non-negative."""
        return self.feature_maps(x).mean(dim=(2, 3))  # (N, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))  # (N, 1000) ImageNet logits
