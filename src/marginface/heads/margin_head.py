"""MarginHead: class centres on the unit sphere + combined margin + scale + cross entropy, and its presets."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.heads.fused import margin_softmax_cross_entropy
from marginface.heads.logits import apply_margin, cosine_logits
from marginface.heads.margin import ARCFACE, COSFACE, NORMFACE, SCALE, SPHEREFACE, Margin
from marginface.heads.partial_fc import gather_batch, local_targets, sample_classes
from marginface.heads.validation import check_embeddings, check_labels
from marginface.partition import even_share


class MarginHead(nn.Module):
    """Loss s·(cos(m1·θ_y + m2) − m3) vs s·cos θ_j through softmax CE; see margin.py for θ beyond π.

    `chunk_size` computes the same loss and gradients without a B × C matrix; `sample_rate` < 1 is
    Partial FC (the batch's positive classes plus uniform negatives, sampled in training mode only, and
    the unsampled centres get no gradient at all: the weight's gradient is then a sparse row tensor, see
    marginface.train.optim). `detach_margin` keeps the margin out of the gradient (arcface_torch's variant).

    The head owns the class rows [start, stop) of the centres (`rows`). One process owns them all. With a
    process `group` (model parallel) each rank owns its rows (by default its even share by group rank) and
    passes its local batch: embeddings and labels are all-gathered, the softmax is normalised across the
    group inside the fused loss, and every rank gets the single-process loss of the global batch (Partial
    FC samples within each rank's rows).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, s: float = SCALE, m1: float = ARCFACE.m1,
        m2: float = ARCFACE.m2, m3: float = ARCFACE.m3, *, chunk_size: int | None = None,
        sample_rate: float = 1.0, detach_margin: bool = False, rows: tuple[int, int] | None = None,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(f"embedding_dim and num_classes must be >= 1, got {embedding_dim}, {num_classes}")
        if not s > 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of classes or None, got {chunk_size}")
        if rows is None:
            rows = (0, num_classes) if group is None else even_share(
                num_classes, dist.get_rank(group), dist.get_world_size(group))
        start, stop = rows
        if not 0 <= start <= stop <= num_classes:
            raise ValueError(f"rows must be [start, stop) within [0, {num_classes}), got [{start}, {stop})")
        if group is None and (start, stop) != (0, num_classes):
            raise ValueError(f"rows [{start}, {stop}) of {num_classes} classes need a process group: "
                             f"without one a head owns every class")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.start, self.stop = start, stop
        self.group = group
        self.s = float(s)
        self.margin = Margin(m1, m2, m3)
        self.chunk_size = chunk_size
        self.sample_rate = sample_rate
        self.detach_margin = detach_margin
        self.weight = nn.Parameter(torch.empty(stop - start, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    @property
    def owns_all_classes(self) -> bool:
        """True when this head holds every class centre (single process)."""
        return self.start == 0 and self.stop == self.num_classes

    def extra_repr(self) -> str:
        margin = self.margin
        rows = "" if self.owns_all_classes else f", rows=({self.start}, {self.stop})"
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, s={self.s}, "
                f"m1={margin.m1}, m2={margin.m2}, m3={margin.m3}, chunk_size={self.chunk_size}, "
                f"sample_rate={self.sample_rate}, detach_margin={self.detach_margin}{rows}")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean margin-softmax cross entropy of the (global) batch; validates shapes, labels and finiteness."""
        check_embeddings(embeddings, self.embedding_dim)
        check_labels(labels, embeddings.shape[0], self.num_classes)
        if self.group is not None:
            embeddings, labels = gather_batch(embeddings, labels, self.group)
        weight = self.weight
        target = labels if self.owns_all_classes else local_targets(labels, self.start, self.stop)
        if self.training and self.sample_rate < 1.0:
            sample = sample_classes(target, self.stop - self.start, self.sample_rate)
            weight = F.embedding(sample.index, self.weight, sparse=True)
            target = sample.target
        return self._loss(embeddings, weight, target)

    def _loss(self, embeddings: Tensor, weight: Tensor, target: Tensor) -> Tensor:
        """The fused loss of the (global) batch against `weight`, the rows this step uses (`target` indexes
        them, −1 for classes of another shard); the adaptive heads add their per-row margins here."""
        return margin_softmax_cross_entropy(
            embeddings, weight, target, self.margin, self.s, self.chunk_size, self.detach_margin, self.group
        )

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) scaled logits for inspection: s·cos θ, with the margin on the true class if labels given."""
        if not self.owns_all_classes:
            raise ValueError(f"logits needs every class centre; this head holds rows [{self.start}, {self.stop}) "
                             f"of {self.num_classes} (gather the weight into a single-process head)")
        check_embeddings(embeddings, self.embedding_dim)
        cos = cosine_logits(embeddings, self.weight)
        if labels is None:
            return cos * self.s
        check_labels(labels, embeddings.shape[0], self.num_classes)
        return apply_margin(cos, labels, self.margin, self.s, self.detach_margin)


class ArcFace(MarginHead):
    """Additive angular margin: s·cos(θ_y + m), m = 0.5, s = 64 (Deng et al., 2019)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = SCALE, m: float = ARCFACE.m2,
                 **kwargs) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=m, m3=0.0, **kwargs)


class CosFace(MarginHead):
    """Additive cosine margin: s·(cos θ_y − m), m = 0.35, s = 64 (Wang et al., 2018)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = SCALE, m: float = COSFACE.m3,
                 **kwargs) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=m, **kwargs)


class SphereFace(MarginHead):
    """Multiplicative angular margin in the combined form: s·ψ(m·θ_y), m = 1.35 (see SphereFaceOriginal)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = SCALE, m: float = SPHEREFACE.m1,
                 **kwargs) -> None:
        super().__init__(embedding_dim, num_classes, s=s, m1=m, m2=0.0, m3=0.0, **kwargs)


class NormFace(MarginHead):
    """Normalised softmax without margin: s·cos θ_j (Wang et al., 2017)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = SCALE, **kwargs) -> None:
        preset = NORMFACE
        super().__init__(embedding_dim, num_classes, s=s, m1=preset.m1, m2=preset.m2, m3=preset.m3, **kwargs)
