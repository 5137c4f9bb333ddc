"""Reference heads without the unit-sphere scale: a plain softmax classifier and SphereFace as published."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.heads.logits import cosine_logits
from marginface.heads.margin import Margin
from marginface.heads.validation import check_embeddings, check_labels


class Softmax(nn.Module):
    """Unnormalised linear layer (bias optional) + cross entropy: the baseline every margin is compared to."""

    def __init__(self, embedding_dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.fc = nn.Linear(embedding_dim, num_classes, bias=bias)

    @property
    def weight(self) -> nn.Parameter:
        """The (C, D) class weights, under the name every head uses (the trainer optimises and saves it)."""
        return self.fc.weight

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean cross entropy of W·x + b."""
        logits = self.logits(embeddings)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return F.cross_entropy(logits, self._checked(embeddings, labels))

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) raw logits W·x (+ b) (labels are accepted for a uniform interface and only validated)."""
        check_embeddings(embeddings, self.embedding_dim)
        if labels is not None:
            self._checked(embeddings, labels)
        return self.fc(embeddings)

    def _checked(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, embeddings.shape[0], self.num_classes)
        return labels


class SphereFaceOriginal(nn.Module):
    """A-Softmax as published: unit-norm centres, logits scaled by ‖x‖, integer m with the piecewise
    ψ(θ) = (−1)^k cos(mθ) − 2k, and the annealing blend (λ·cos θ + ψ(θ)) / (1 + λ) on the target.

    `lambda_` is meant to be annealed by the caller (e.g. max(5, 1000 / (1 + 0.12·step))); 0 is pure ψ.
    """

    def __init__(self, embedding_dim: int, num_classes: int, m: int = 4, lambda_: float = 0.0) -> None:
        super().__init__()
        if int(m) != m or m < 1:
            raise ValueError(f"SphereFaceOriginal needs an integer margin m >= 1, got {m}")
        if lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.margin = Margin(float(m), 0.0, 0.0)
        self.lambda_ = float(lambda_)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean cross entropy of the A-Softmax logits."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) logits ‖x‖·cos θ_j, with ‖x‖·(λ cos θ_y + ψ(θ_y)) / (1 + λ) on the true class."""
        check_embeddings(embeddings, self.embedding_dim)
        cos = cosine_logits(embeddings, self.weight)
        norm = torch.linalg.vector_norm(embeddings.to(cos.dtype), dim=1, keepdim=True)
        if labels is None:
            return cos * norm
        check_labels(labels, embeddings.shape[0], self.num_classes)
        rows = torch.arange(cos.shape[0], device=cos.device)
        cos_t = cos[rows, labels]
        target = (self.lambda_ * cos_t + self.margin.target_logit(cos_t).to(cos.dtype)) / (1.0 + self.lambda_)
        return cos.index_put((rows, labels), target) * norm
