"""Improved ResNet (iResNet 18/34/50/100/200) with arcface_torch's parameter names, shapes and forward.

A released arcface_torch `backbone.pth` for iresnet18/34/50/100/200 loads with strict=True and gives the
same embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from marginface.backbones.contract import GradCheckpointing
from marginface.precision import full_precision

DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6),
}


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, + shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus (possibly downsampled) identity."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(GradCheckpointing):
    """(B, 3, 112, 112) in [−1, 1] → (B, num_features); four stride-2 stages, BN-dropout-FC-BN head."""

    fc_scale = 7 * 7

    def __init__(
        self, layers: tuple[int, int, int, int], num_features: int = 512, dropout: float = 0.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.set_grad_checkpointing(gradient_checkpointing)
        self.num_features = num_features
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        in_channels = 64
        for index, (width, count) in enumerate(zip(widths, layers, strict=True), start=1):
            setattr(self, f"layer{index}", self._stage(in_channels, width, count))
            in_channels = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    @staticmethod
    def _stage(in_channels: int, channels: int, count: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, 2, bias=False), nn.BatchNorm2d(channels, eps=1e-5)
        )
        blocks = [IBasicBlock(in_channels, channels, 2, downsample)]
        blocks += [IBasicBlock(channels, channels) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of aligned faces; the FC and final BN run in float32 even under autocast."""
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = self.run_layers(stage, x)  # block by block, so checkpointing saves per block
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.features(self.fc(full_precision(x)))


def iresnet(depth: int, **kwargs) -> IResNet:
    """iResNet of the given depth (18, 34, 50, 100 or 200)."""
    if depth not in DEPTHS:
        raise ValueError(f"unknown iresnet depth {depth}; choose one of {sorted(DEPTHS)}")
    return IResNet(DEPTHS[depth], **kwargs)
