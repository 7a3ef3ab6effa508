"""ReconNet: ResNet-50 backbone + seven 1x1 heads -> 257 3DMM coefficients (spec §4.6).

Keys (prefix ``face_3drecon.`` stripped): torchvision-style ``backbone.*`` (no ``fc``) and
``final_layers.{0..6}.{weight,bias}``. The ResNet is written here (no torchvision dependency).

``forward(x (N,3,224,224) RGB in [0,1]) -> (N,257)`` =
``[identity 80 | expression 64 | texture 80 | angles 3 | lighting 27 | tx,ty 2 | tz 1]``.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), identity or projection skip."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 without the classifier; ``(N,3,H,W) -> (N,2048,1,1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer, cin = self._make_layer(cin, width, blocks, stride)
            self.add_module(f"layer{i}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    @staticmethod
    def _make_layer(cin: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        cout = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or cin != cout:
            downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        layers = [Bottleneck(cin, width, stride, downsample)]
        layers += [Bottleneck(cout, width) for _ in range(blocks - 1)]
        return nn.Sequential(*layers), cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """``forward(x (N,3,224,224) float in [0,1]) -> full_coeff (N,257)``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, c, 1) for c in HEAD_SIZES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        return torch.cat([head(feat) for head in self.final_layers], dim=1).flatten(1)
