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
    `clip` = None continues the target past φ = π with ψ (above); a number ε instead follows AdaFace's
    released code: cos clamped to ±(1 − ε), φ clipped into [ε, π − ε] (flat, zero gradient, beyond).
    m2 and m3 may also be given per row (adaptive margins) to the methods below.
    """

    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    clip: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.m1) and self.m1 > 0):
            raise ValueError(f"margin m1 must be a finite number > 0, got {self.m1}")
        for name in ("m2", "m3"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"margin {name} must be finite, got {value}")
        if self.clip is not None and not 0 < self.clip < 0.5:
            raise ValueError(f"margin clip must be in (0, 0.5) or None, got {self.clip}")

    @property
    def is_angular(self) -> bool:
        """True when the transform needs θ (m1 ≠ 1 or m2 ≠ 0); CosFace-style margins stay in cosine space."""
        return self.m1 != 1.0 or self.m2 != 0.0

    def target_logit(self, cos: Tensor, m2: Tensor | None = None, m3: Tensor | None = None) -> Tensor:
        """Return ψ(m1·acos(cos) + m2) − m3, computed in float32 (or float64) even under autocast; `m2`, `m3`
        (per row, like `cos`) replace the fixed ones when given."""
        dtype = compute_dtype(cos)
        with torch.autocast(device_type=cos.device.type, enabled=False):
            c = cos.to(dtype)
            add = self.m2 if m2 is None else m2.to(dtype)
            sub = self.m3 if m3 is None else m3.to(dtype)
            if not self.is_angular and m2 is None:
                return c - sub
            if self.clip is not None:
                theta = torch.acos(c.clamp(-1.0 + self.clip, 1.0 - self.clip))
                return torch.cos((self.m1 * theta + add).clamp(self.clip, math.pi - self.clip)) - sub
            eps = _ACOS_EPS[dtype]
            theta = torch.acos(c.clamp(-1.0 + eps, 1.0 - eps))
            phi = self.m1 * theta + add
            with torch.no_grad():
                k = torch.floor(phi / math.pi)
                sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
            return sign * torch.cos(phi) - 2.0 * k - sub

    def target_logit_and_grads(
        self, cos: Tensor, detach: bool = False, m2: Tensor | None = None, m3: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(target logit, its derivative d/dcos, d/dm2 when `m2` is given per row); with `detach` the
        derivatives are those of cos itself (the arcface_torch variant: the margin shifts the value only)."""
        c = cos.detach().to(compute_dtype(cos))
        m2 = None if m2 is None else m2.detach().to(c.dtype)
        if detach or (not self.is_angular and m2 is None):
            with torch.no_grad():
                value = self.target_logit(c, m2, m3)
            return value, torch.ones_like(c), None if m2 is None else torch.zeros_like(c)
        with torch.enable_grad():
            leaves = [c.clone().requires_grad_(True)] + ([] if m2 is None else [m2.clone().requires_grad_(True)])
            value = self.target_logit(leaves[0], None if m2 is None else leaves[1], m3)
            grads = torch.autograd.grad(value.sum(), leaves)
        return value.detach(), grads[0], grads[1] if m2 is not None else None

    def target_logit_and_slope(self, cos: Tensor, detach: bool = False) -> tuple[Tensor, Tensor]:
        """Return the transformed target logit and its derivative d/dcos (1 when `detach`, the
        arcface_torch variant where the margin shifts the value but not the gradient)."""
        value, slope, _ = self.target_logit_and_grads(cos, detach)
        return value, slope


# The published presets (the heads' defaults and the training config's derive from these) and their scale s.
SCALE = 64.0
ARCFACE = Margin()
COSFACE = Margin(1.0, 0.0, 0.35)
SPHEREFACE = Margin(1.35, 0.0, 0.0)
NORMFACE = Margin(1.0, 0.0, 0.0)
