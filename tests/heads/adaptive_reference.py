"""Independent float64 references of the adaptive heads, written from their definitions with a full B × C
matrix and autograd (no marginface code): the loss and the state after one step."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _cosines(x: Tensor, w: Tensor) -> Tensor:
    return (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()


def _psi(phi: Tensor) -> Tensor:
    """cos φ on [0, π], continued past π as (−1)^k cos φ − 2k, k = ⌊φ/π⌋."""
    k = torch.floor(phi.detach() / math.pi)
    return torch.where(k % 2 == 0, 1.0, -1.0) * torch.cos(phi) - 2 * k


def curricularface(x: Tensor, w: Tensor, labels: Tensor, m: float, s: float, t: float) -> tuple[Tensor, float]:
    """CurricularFace: t ← 0.01·mean cos θ_y + 0.99·t first; target ψ(θ_y + m); hard negatives c·(t + c)."""
    cos = _cosines(x, w)
    rows = torch.arange(len(labels))
    cos_y = cos[rows, labels]
    t = 0.01 * float(cos_y.detach().mean()) + 0.99 * t
    target = _psi(torch.acos(cos_y) + m)
    hard = cos > target.detach().unsqueeze(1)
    logits = torch.where(hard, cos * (t + cos), cos)
    onehot = F.one_hot(labels, w.shape[0]).bool()
    logits = torch.where(onehot, target.unsqueeze(1), logits)
    return F.cross_entropy(s * logits, labels), t


def adaface(x: Tensor, w: Tensor, labels: Tensor, m: float, h: float, s: float, t_alpha: float,
            mean: float, std: float) -> tuple[Tensor, float, float]:
    """AdaFace as released: EMAs of the clipped norms' mean and unbiased std first, ẑ = clip(h(‖x‖ − μ) /
    (σ + 1e-3), ±1); target cos(clip(acos(clamp(cos θ_y, ±0.999)) − mẑ, 1e-3, π − 1e-3)) − (m + mẑ)."""
    eps = 1e-3
    norms = x.detach().norm(dim=1).clamp(1e-3, 100)
    mean = float(norms.mean()) * t_alpha + (1 - t_alpha) * mean
    std = float(norms.std()) * t_alpha + (1 - t_alpha) * std
    z = ((norms - mean) / (std + eps) * h).clamp(-1, 1)
    cos = _cosines(x, w)
    rows = torch.arange(len(labels))
    theta = torch.acos(cos[rows, labels].clamp(-1 + eps, 1 - eps))
    target = torch.cos((theta - m * z).clamp(eps, math.pi - eps)) - (m + m * z)
    onehot = F.one_hot(labels, w.shape[0]).bool()
    logits = torch.where(onehot, target.unsqueeze(1), cos)
    return F.cross_entropy(s * logits, labels), mean, std


def magface(x: Tensor, w: Tensor, labels: Tensor, l_a: float, u_a: float, l_m: float, u_m: float,
            lambda_g: float, s: float) -> Tensor:
    """MagFace as released: a = clamp(‖x‖, l_a, u_a) with gradient, target ψ(θ_y + m(a)), plus λ_g·mean g(a)."""
    a = x.norm(dim=1).clamp(l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    cos = _cosines(x, w)
    rows = torch.arange(len(labels))
    target = _psi(torch.acos(cos[rows, labels]) + margin)
    onehot = F.one_hot(labels, w.shape[0]).bool()
    logits = torch.where(onehot, target.unsqueeze(1), cos)
    return F.cross_entropy(s * logits, labels) + lambda_g * (a / u_a**2 + 1 / a).mean()


def elasticface(x: Tensor, w: Tensor, labels: Tensor, draws: Tensor, kind: str, s: float, plus: bool) -> Tensor:
    """ElasticFace given the step's draws m_b (batch order): target ψ(θ_y + m_b) ("arc") or cos θ_y − m_b
    ("cos"); with `plus` the row of the k-th smallest cos θ_y takes the k-th largest draw (no ties here)."""
    cos = _cosines(x, w)
    rows = torch.arange(len(labels))
    cos_y = cos[rows, labels]
    margins = draws.to(cos.dtype)
    if plus:
        hardness = torch.argsort(torch.argsort(cos_y.detach()))  # 0 for the row with the smallest cos θ_y
        margins = torch.sort(margins, descending=True).values[hardness]
    target = _psi(torch.acos(cos_y) + margins) if kind == "arc" else cos_y - margins
    onehot = F.one_hot(labels, w.shape[0]).bool()
    logits = torch.where(onehot, target.unsqueeze(1), cos)
    return F.cross_entropy(s * logits, labels)
