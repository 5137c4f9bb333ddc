"""The one target-logit transform every head uses: cos θ_y ↦ ψ(m1·θ_y + m2) − m3.

ψ(φ) = (−1)^k · cos φ − 2k with k = ⌊φ / π⌋.

On φ ∈ [0, π] ψ is exactly cos φ, so inside that range the transform is the combined margin
cos(m1·θ + m2) − m3 of ArcFace / CosFace / SphereFace. Beyond π, plain cos(m1·θ + m2) turns back up
(the paper's loss is not monotonic there); ψ instead continues it by reflecting each further half-period
and stepping down by 2, which is SphereFace's piecewise ψ generalised to real φ. The result is continuous,
strictly decreasing in θ on [0, π] for every m1 > 0 and every m2, and has a finite, non-zero gradient
everywhere except at the isolated points φ = kπ (where it is flat, like cos at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from marginface.precision import compute_dtype

# acos' derivative is −1/sqrt(1 − c²): clamp |c| slightly below 1 so that it stays finite.
_ACOS_EPS = {torch.float32: 1e-6, torch.float64: 1e-12}


@dataclass(frozen=True)
class Margin:
    """Combined margin (m1, m2, m3): SphereFace's multiplicative, ArcFace's and CosFace's additive margins.

    The defaults are ArcFace's; the named presets below are the one place the published values live.
    """

    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.m1) and self.m1 > 0):
            raise ValueError(f"margin m1 must be a finite number > 0, got {self.m1}")
        for name in ("m2", "m3"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"margin {name} must be finite, got {value}")

    @property
    def is_angular(self) -> bool:
        """True when the transform needs θ (m1 ≠ 1 or m2 ≠ 0); CosFace-style margins stay in cosine space."""
        return self.m1 != 1.0 or self.m2 != 0.0

    def target_logit(self, cos: Tensor) -> Tensor:
        """Return ψ(m1·acos(cos) + m2) − m3, computed in float32 (or float64) even under autocast."""
        dtype = compute_dtype(cos)
        with torch.autocast(device_type=cos.device.type, enabled=False):
            c = cos.to(dtype)
            if not self.is_angular:
                return c - self.m3
            eps = _ACOS_EPS[dtype]
            theta = torch.acos(c.clamp(-1.0 + eps, 1.0 - eps))
            phi = self.m1 * theta + self.m2
            with torch.no_grad():
                k = torch.floor(phi / math.pi)
                sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            return sign * torch.cos(phi) - 2.0 * k - self.m3

    def target_logit_and_slope(self, cos: Tensor, detach: bool = False) -> tuple[Tensor, Tensor]:
        """Return the transformed target logit and its derivative d/dcos (1 when `detach`, the
        arcface_torch variant where the margin shifts the value but not the gradient)."""
        c = cos.detach().to(compute_dtype(cos))
        if detach or not self.is_angular:
            with torch.no_grad():
                return self.target_logit(c), torch.ones_like(c)
        with torch.enable_grad():
            leaf = c.clone().requires_grad_(True)
            value = self.target_logit(leaf)
            (slope,) = torch.autograd.grad(value.sum(), leaf)
        return value.detach(), slope


# The published presets (the heads' defaults and the training config's derive from these) and their scale s.
SCALE = 64.0
ARCFACE = Margin()
COSFACE = Margin(1.0, 0.0, 0.35)
SPHEREFACE = Margin(1.35, 0.0, 0.0)
NORMFACE = Margin(1.0, 0.0, 0.0)
