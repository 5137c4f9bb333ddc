"""Sub-center ArcFace: K centres per class, the class score is the best of its K cosines."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.heads.logits import apply_margin, cosine_logits
from marginface.heads.margin import ARCFACE, SCALE, Margin
from marginface.heads.validation import check_embeddings, check_labels


class SubCenterArcFace(nn.Module):
    """ArcFace over max_k cos θ_{j,k} (Deng et al., ECCV 2020); rows of `weight` are class-major (j·K + k).

    Noisy samples gather around non-dominant sub-centres; `outliers` lists them so they can be dropped.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, sub_centers: int = 3, s: float = SCALE,
        m1: float = ARCFACE.m1, m2: float = ARCFACE.m2, m3: float = ARCFACE.m3, detach_margin: bool = False,
    ) -> None:
        super().__init__()
        if sub_centers < 1:
            raise ValueError(f"sub_centers must be >= 1, got {sub_centers}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.sub_centers = sub_centers
        self.s = float(s)
        self.margin = Margin(m1, m2, m3)
        self.detach_margin = detach_margin
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def class_cosines(self, embeddings: Tensor) -> Tensor:
        """(B, C) cosine to the closest sub-centre of each class."""
        cos = cosine_logits(embeddings, self.weight)
        return cos.view(cos.shape[0], self.num_classes, self.sub_centers).amax(dim=2)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean margin-softmax cross entropy over the per-class best sub-centre."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) scaled logits, with the margin on the true class when labels are given."""
        check_embeddings(embeddings, self.embedding_dim)
        cos = self.class_cosines(embeddings)
        if labels is None:
            return cos * self.s
        check_labels(labels, embeddings.shape[0], self.num_classes)
        return apply_margin(cos, labels, self.margin, self.s, self.detach_margin)

    @torch.no_grad()
    def outliers(
        self, embeddings: Tensor, labels: Tensor, threshold_degrees: float = 75.0
    ) -> tuple[Tensor, Tensor]:
        """Indices of samples farther than `threshold_degrees` from their class's dominant sub-centre.

        A class's dominant sub-centre is the one that most of its given samples are closest to.
        Returns (sorted outlier indices, (C,) dominant sub-centre per class, −1 for absent classes).
        """
        check_embeddings(embeddings, self.embedding_dim)
        check_labels(labels, embeddings.shape[0], self.num_classes)
        cos = cosine_logits(embeddings, self.weight).view(-1, self.num_classes, self.sub_centers)
        rows = torch.arange(cos.shape[0], device=cos.device)
        own = cos[rows, labels]  # (B, K) cosines to the sub-centres of the sample's own class
        nearest = own.argmax(dim=1)
        votes = torch.zeros(self.num_classes, self.sub_centers, dtype=torch.long, device=cos.device)
        votes.index_put_((labels, nearest), torch.ones_like(nearest), accumulate=True)
        dominant = torch.where(votes.sum(dim=1) > 0, votes.argmax(dim=1), torch.full_like(votes[:, 0], -1))
        to_dominant = own[rows, dominant[labels]]
        outlying = torch.nonzero(to_dominant < math.cos(math.radians(threshold_degrees))).squeeze(1)
        return outlying, dominant
