"""MobileFaceNet with arcface_torch's `mbf` parameter names, shapes and forward (GDC embedding head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.backbones.contract import GradCheckpointing
from marginface.precision import full_precision


class ConvBlock(nn.Module):
    """Conv → BN → PReLU (stored as `layers` so that state-dict keys match arcface_torch)."""

    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv → BN without activation (the linear bottleneck)."""

    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand → depthwise k×k → 1×1 project, optional residual."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1), groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups),
            ConvBlock(groups, groups, kernel, stride, padding, groups=groups),
            LinearBlock(groups, out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the bottleneck (plus the input when residual)."""
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """A stack of residual DepthWise blocks at constant width."""

    def __init__(self, c: int, num_block: int, groups: int, kernel=(3, 3), stride=(1, 1), padding=(1, 1)):
        super().__init__()
        self.layers = nn.Sequential(
            *[DepthWise(c, c, True, kernel, stride, padding, groups) for _ in range(num_block)]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stack."""
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv (7×7 for a 112 input) → flatten → linear → BN1d: the embedding head."""

    def __init__(self, embedding_size: int, dropout: float = 0.0, kernel: int = 7):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=(kernel, kernel), groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Embed the 7×7 feature map (dropout sits before the linear layer)."""
        x = self.layers[1](self.layers[0](x))
        return self.layers[3](self.layers[2](self.dropout(x)))


class MobileFaceNet(GradCheckpointing):
    """MobileFaceNet (Chen et al., 2018) as arcface_torch builds it: `mbf` = blocks (1, 4, 6, 2), scale 2.

    `input_pool` > 1 average-pools the 112×112 face by that factor before the first layer: the input
    contract stays 112×112 in [−1, 1], but the network works at 56×56 (2) or 28×28 (4), about input_pool²
    times cheaper — for small-scale experiments on CPU. The GDC kernel follows the smaller final map.
    """

    def __init__(self, num_features: int = 512, blocks=(1, 4, 6, 2), scale: int = 2, dropout: float = 0.0,
                 gradient_checkpointing: bool = False, input_pool: int = 1):
        super().__init__()
        if input_pool not in (1, 2, 4):
            raise ValueError(f"input_pool must be 1, 2 or 4 (112 / input_pool pixels), got {input_pool}")
        self.num_features = num_features
        self.set_grad_checkpointing(gradient_checkpointing)
        self.input_pool = input_pool
        side = 112 // input_pool
        for _ in range(4):  # four stride-2 layers (kernel 3, padding 1): side -> ceil(side / 2)
            side = (side + 1) // 2
        c64, c128 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList([ConvBlock(3, c64, (3, 3), (2, 2), (1, 1))])
        if blocks[0] == 1:
            self.layers.append(ConvBlock(c64, c64, (3, 3), (1, 1), (1, 1), groups=64))
        else:
            self.layers.append(Residual(c64, blocks[0], groups=128))
        self.layers.extend([
            DepthWise(c64, c64, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=128),
            Residual(c64, blocks[1], groups=128),
            DepthWise(c64, c128, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=256),
            Residual(c128, blocks[2], groups=256),
            DepthWise(c128, c128, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=512),
            Residual(c128, blocks[3], groups=256),
        ])
        self.conv_sep = ConvBlock(c128, 512)
        self.features = GDC(num_features, dropout, kernel=side)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of aligned faces; the embedding head runs in float32 even under autocast."""
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        x = self.run_layers(self.layers, x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.features(self.conv_sep(full_precision(x)))


def mobilefacenet(large: bool = False, **kwargs) -> MobileFaceNet:
    """arcface_torch's `mbf` (or `mbf_large`: blocks (2, 8, 12, 4), scale 4)."""
    if large:
        kwargs.setdefault("blocks", (2, 8, 12, 4))
        kwargs.setdefault("scale", 4)
    return MobileFaceNet(**kwargs)
