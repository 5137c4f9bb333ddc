"""An independent loop-based float64 reference of the combined-margin softmax loss (pure Python math)."""

from __future__ import annotations

import math

import torch


def psi(phi: float) -> float:
    """cos φ on [0, π], continued monotonically: (−1)^k cos φ − 2k, k = ⌊φ/π⌋."""
    k = math.floor(phi / math.pi)
    return (-1) ** k * math.cos(phi) - 2 * k


def reference_loss(
    x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, s: float, m1: float, m2: float, m3: float,
    sub_centers: int = 1,
) -> float:
    """Mean over the batch of −log softmax at the label, from nested Python loops in float64."""
    xs = x.detach().double().tolist()
    ws = w.detach().double().tolist()
    num_classes = len(ws) // sub_centers
    total = 0.0
    for row, label in zip(xs, labels.tolist(), strict=True):
        xn = math.sqrt(sum(v * v for v in row))
        logits = []
        for j in range(num_classes):
            best = -2.0
            for k in range(sub_centers):
                wj = ws[j * sub_centers + k]
                wn = math.sqrt(sum(v * v for v in wj))
                best = max(best, sum(a * b for a, b in zip(row, wj, strict=True)) / (xn * wn))
            if j == label:
                theta = math.acos(max(-1.0, min(1.0, best)))
                logits.append(s * (psi(m1 * theta + m2) - m3))
            else:
                logits.append(s * best)
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        total += lse - logits[label]
    return total / len(xs)
