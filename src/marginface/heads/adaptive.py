"""Heads whose margin adapts: CurricularFace (hard negatives re-weighted by a curriculum t), AdaFace
(margin from the feature norm's place in the batch), MagFace (margin from the norm, plus a regulariser) and
ElasticFace (margins drawn per sample from a normal distribution, by difficulty in its "+" variant).
All are MarginHeads on the fused loss, so chunked mode, Partial FC and model-parallel class shards work as
for ArcFace; their state is registered buffers.

Each follows its authors' released code where it differs from the paper; the docstrings say where.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from marginface.heads.fused import margin_softmax_cross_entropy, target_cosines
from marginface.heads.logits import apply_margin, cosine_logits
from marginface.heads.margin import SCALE, Margin
from marginface.heads.margin_head import MarginHead
from marginface.heads.validation import check_embeddings, check_labels
from marginface.precision import compute_dtype
from marginface.seeding import head_seed

CURRICULAR_ALPHA = 0.01  # t ← 0.01·mean cos θ_y + 0.99·t (the paper's momentum 0.99 on the old t)
ADAFACE_EPS = 1e-3  # AdaFace's released code: cos clamp, θ clip, the std's epsilon
ADAFACE_NORM_RANGE = (1e-3, 100.0)  # feature norms are clipped to this before their statistics
# ElasticFace's (m, std) by (kind, plus), from the released training config (fdbtrs/ElasticFace config.py).
ELASTIC_DEFAULTS = {("arc", False): (0.5, 0.05), ("arc", True): (0.5, 0.0175),
                    ("cos", False): (0.35, 0.05), ("cos", True): (0.35, 0.02)}


def _check_finite(name: str, value: float, low: float = -math.inf, low_open: bool = False) -> None:
    """ValueError naming `name` unless `value` is finite and above `low` (strictly when `low_open`)."""
    if not math.isfinite(value) or value < low or (low_open and value == low):
        bound = f" > {low}" if low_open else (f" >= {low}" if low > -math.inf else "")
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")


class CurricularFace(MarginHead):
    """CurricularFace (Huang et al., CVPR 2020): target s·cos(θ_y + m), negatives s·N(cos θ_j) with
    N(c) = c if c ≤ cos(θ_y + m) else c·(t + c); t is the EMA of the batch's mean cos θ_y (a buffer).

    As in the released code (HuangYG123/CurricularFace): t starts at 0 and is updated before it is used, in
    the same step, t ← 0.01·mean_b cos θ_y + 0.99·t (training mode only; under model parallelism over the
    global batch: every rank computes its classes' cos θ_y and the vector is all-reduced, so all ranks hold
    one t); t and the hard-negative mask carry no gradient, the re-weighted negatives do ((t + 2c)).
    Past θ_y + m > π the released code switches to cos θ_y − m·sin m (a jump); here the target is the one
    transform ψ(θ_y + m) of margin.py (continuous and decreasing), equal to cos(θ_y + m) up to there, and a
    negative is hard when it exceeds that target logit.
    """

    def __init__(self, embedding_dim: int, num_classes: int, m: float = 0.5, s: float = SCALE, **kwargs) -> None:
        _check_finite("CurricularFace m", m)
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=m, m3=0.0, **kwargs)
        self.register_buffer("t", torch.zeros(1))

    def _loss(self, embeddings: Tensor, weight: Tensor, target: Tensor) -> Tensor:
        """Update t from this batch (training mode), then the fused loss with re-weighted hard negatives."""
        if self.training:
            mean = target_cosines(embeddings, weight, target, self.group).mean()
            with torch.no_grad():
                self.t.copy_(mean.to(self.t.dtype) * CURRICULAR_ALPHA + (1 - CURRICULAR_ALPHA) * self.t)
        return margin_softmax_cross_entropy(embeddings, weight, target, self.margin, self.s, self.chunk_size,
                                            self.detach_margin, self.group, curriculum_t=self.t)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) scaled logits at the current t (not updated): s·cos θ, or with the margin and the
        re-weighted hard negatives when labels are given."""
        if labels is None:
            return super().logits(embeddings)
        cos = cosine_logits(embeddings, self.weight)
        check_labels(labels, embeddings.shape[0], self.num_classes)
        return apply_margin(cos, labels, self.margin, self.s, self.detach_margin, curriculum_t=self.t)


class AdaFace(MarginHead):
    """AdaFace (Kim et al., CVPR 2022): target s·(cos(θ_y − m·ẑ) − (m + m·ẑ)), ẑ = clip(h·(‖x‖ − μ) /
    (σ + ε), −1, 1), negatives s·cos θ_j; μ, σ are EMAs (rate t_alpha) of the batch's norm mean and std.

    As in the released code (mk-minchul/AdaFace): norms are clipped to [0.001, 100] and carry no gradient
    (the margin does not push on the norm); μ, σ start at 20 and 100 and are updated before use in the same
    step (training mode only) with the unbiased std (a batch of one leaves σ alone); ε = 1e-3; cos θ_y is
    clamped to ±(1 − ε) and θ_y − m·ẑ clipped into [ε, π − ε], which is flat beyond both ends: that clip, not
    our ψ continuation, handles the region where the angle leaves [0, π]. The released code also clamps every
    negative cosine to ±(1 − ε); here negatives are not clamped (identical unless one exceeds 0.999).
    Under model parallelism the head sees the all-gathered global batch, so μ and σ are the global batch's.
    """

    def __init__(self, embedding_dim: int, num_classes: int, m: float = 0.4, h: float = 0.333, s: float = SCALE,
                 t_alpha: float = 0.01, **kwargs) -> None:
        _check_finite("AdaFace m", m)
        _check_finite("AdaFace h", h, 0.0, low_open=True)
        if not 0.0 < t_alpha <= 1.0:
            raise ValueError(f"AdaFace t_alpha must be in (0, 1], got {t_alpha}")
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=0.0, **kwargs)
        self.margin = Margin(1.0, 0.0, 0.0, clip=ADAFACE_EPS)
        self.m, self.h, self.t_alpha = float(m), float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, AdaFace m={self.m}, h={self.h}, t_alpha={self.t_alpha}"

    def margins(self, embeddings: Tensor, update: bool = False) -> tuple[Tensor, Tensor]:
        """Per-row (angular m2 = −m·ẑ, additive m3 = m + m·ẑ) from the feature norms; `update` first moves
        the norm EMAs with this batch."""
        with torch.no_grad():
            norms = torch.linalg.vector_norm(embeddings.detach().to(compute_dtype(embeddings)), dim=1)
            norms = norms.clamp(*ADAFACE_NORM_RANGE)
            alpha = self.t_alpha
            if update:
                self.batch_mean.copy_(norms.mean() * alpha + (1 - alpha) * self.batch_mean)
                if norms.numel() > 1:
                    self.batch_std.copy_(norms.std() * alpha + (1 - alpha) * self.batch_std)
            scaler = ((norms - self.batch_mean) / (self.batch_std + ADAFACE_EPS) * self.h).clamp(-1.0, 1.0)
            return -self.m * scaler, self.m + self.m * scaler

    def _loss(self, embeddings: Tensor, weight: Tensor, target: Tensor) -> Tensor:
        """The fused loss with this batch's per-row margins (the EMAs move first in training mode)."""
        m2, m3 = self.margins(embeddings, update=self.training)
        return margin_softmax_cross_entropy(embeddings, weight, target, self.margin, self.s, self.chunk_size,
                                            self.detach_margin, self.group, m2=m2, m3=m3)

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) scaled logits at the current μ, σ (not updated), with the margin when labels are given."""
        if labels is None:
            return super().logits(embeddings)
        check_embeddings(embeddings, self.embedding_dim)
        check_labels(labels, embeddings.shape[0], self.num_classes)
        m2, m3 = self.margins(embeddings)
        return apply_margin(cosine_logits(embeddings, self.weight), labels, self.margin, self.s, self.detach_margin,
                            m2=m2, m3=m3)


class MagFace(MarginHead):
    """MagFace (Meng et al., CVPR 2021): target s·ψ(θ_y + m(a)), negatives s·cos θ_j, plus λ_g·mean g(a),
    a = clamp(‖x‖, l_a, u_a), m(a) = l_m + (u_m − l_m)(a − l_a)/(u_a − l_a), g(a) = a/u_a² + 1/a.

    As in the released code (IrvingMeng/MagFace): the margin keeps its gradient through the norm (the fused
    loss returns dL/dm(a)), both terms see the clamped norm (no gradient outside [l_a, u_a]), and the loss
    is their sum. Past θ_y + m > π the released code switches to cos θ_y − m·sin m; here it is ψ. Under
    model parallelism the regulariser is the global batch's; each rank passes back 1/N of its gradient, as
    the all-gather sums the ranks' shares.
    """

    def __init__(self, embedding_dim: int, num_classes: int, l_a: float = 10.0, u_a: float = 110.0,
                 l_m: float = 0.45, u_m: float = 0.8, lambda_g: float = 35.0, s: float = SCALE, **kwargs) -> None:
        for name, value in (("l_a", l_a), ("u_a", u_a), ("l_m", l_m), ("u_m", u_m)):
            _check_finite(f"MagFace {name}", value)
        _check_finite("MagFace lambda_g", lambda_g, 0.0)
        if not 0 < l_a < u_a:
            raise ValueError(f"MagFace needs 0 < l_a < u_a, got l_a = {l_a}, u_a = {u_a}")
        if not l_m <= u_m:
            raise ValueError(f"MagFace needs l_m <= u_m, got l_m = {l_m}, u_m = {u_m}")
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=0.0, **kwargs)
        self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = (float(v) for v in (l_a, u_a, l_m, u_m, lambda_g))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, MagFace l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, "
                f"u_m={self.u_m}, lambda_g={self.lambda_g}")

    def magnitudes(self, embeddings: Tensor) -> Tensor:
        """(B,) a = clamp(‖x‖, l_a, u_a), with its gradient."""
        return torch.linalg.vector_norm(embeddings.to(compute_dtype(embeddings)), dim=1).clamp(self.l_a, self.u_a)

    def _loss(self, embeddings: Tensor, weight: Tensor, target: Tensor) -> Tensor:
        """Margin-softmax CE with m(a) per row, plus λ_g times the mean regulariser of the (global) batch."""
        a = self.magnitudes(embeddings)
        m2 = self.l_m + (self.u_m - self.l_m) * (a - self.l_a) / (self.u_a - self.l_a)
        loss = margin_softmax_cross_entropy(embeddings, weight, target, self.margin, self.s, self.chunk_size,
                                            self.detach_margin, self.group, m2=m2)
        regulariser = (a / self.u_a**2 + 1.0 / a).mean() * self.lambda_g
        if self.group is not None:  # the same value on every rank; the gathered embeddings sum N gradients
            share = regulariser / torch.distributed.get_world_size(self.group)
            regulariser = share + (regulariser - share).detach()
        return loss + regulariser.to(loss.dtype)


class ElasticFace(MarginHead):
    """ElasticFace (Boutros et al., CVPRW 2022): the margin of ArcFace (kind "arc": s·ψ(θ_y + m_b)) or CosFace
    (kind "cos": s·(cos θ_y − m_b)) drawn per sample, m_b ~ N(m, std²), anew at every training step;
    negatives s·cos θ_j. With `plus` (ElasticFace+) the batch's draws are sorted and handed out by
    difficulty: the row with the smallest cos θ_y gets the largest margin, the easiest the smallest.

    Defaults (m, std) are the released training config's: arc 0.5, 0.05; cos 0.35, 0.05; arc+ 0.5, 0.0175;
    cos+ 0.35, 0.02. Where ours differs from the released code (fdbtrs/ElasticFace utils/losses.py):
    - "+": the released code gathers the sorted margins through the sort permutation (margin[argsort(−cos)])
      instead of scattering them through it, which pairs ranks and margins as described only when that
      permutation is its own inverse; here the assignment is the one the paper describes (ties in cos θ_y
      keep batch order).
    - arc: past θ_y + m_b > π (or below 0 for a negative draw) the target is ψ, continuous and decreasing;
      the released code takes cos(θ + m) as is (not monotonic there) and clamps cos to [−1, 1] only.
    - The draws come from the head's own torch.Generator (CPU, float64, then cast), seeded from `seed`
      through marginface.seeding.head_seed; its state is the uint8 buffer `generator_state`, so checkpoints
      resume the stream bit-identically. Under model parallelism the head sees the all-gathered global
      batch and every rank holds the same stream, so all draw the same margins for it; "+" ranks the rows by
      the all-reduced cos θ_y of the global batch.
    - Eval mode draws nothing (the stream stays put) and uses the mean margin m: ArcFace / CosFace.
    """

    def __init__(self, embedding_dim: int, num_classes: int, kind: str = "arc", m: float | None = None,
                 std: float | None = None, plus: bool = False, s: float = SCALE, seed: int = 0,
                 **kwargs) -> None:
        if kind not in ("arc", "cos"):
            raise ValueError(f"ElasticFace kind must be 'arc' or 'cos', got {kind!r}")
        if not isinstance(plus, bool):
            raise ValueError(f"ElasticFace plus must be true or false, got {plus!r}")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise ValueError(f"ElasticFace seed must be an integer, got {seed!r}")
        default_m, default_std = ELASTIC_DEFAULTS[(kind, plus)]
        m = default_m if m is None else m
        std = default_std if std is None else std
        _check_finite("ElasticFace m", m)
        _check_finite("ElasticFace std", std, 0.0)
        arc = kind == "arc"
        super().__init__(embedding_dim, num_classes, s=s, m1=1.0, m2=m if arc else 0.0, m3=0.0 if arc else m,
                         **kwargs)
        self.kind, self.m, self.std, self.plus, self.seed = kind, float(m), float(std), plus, int(seed)
        self._generator = torch.Generator().manual_seed(head_seed(self.seed))
        self.register_buffer("generator_state", self._generator.get_state())

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, ElasticFace kind={self.kind}, m={self.m}, std={self.std}, "
                f"plus={self.plus}, seed={self.seed}")

    def draw(self, count: int) -> Tensor:
        """(count,) float64 margins ~ N(m, std²) on the CPU, in batch order; advances the stream (the buffer)."""
        self._generator.set_state(self.generator_state.cpu())
        draws = torch.empty(count, dtype=torch.float64).normal_(self.m, self.std, generator=self._generator)
        self.generator_state.copy_(self._generator.get_state())
        return draws

    @staticmethod
    def by_difficulty(draws: Tensor, cos_target: Tensor) -> Tensor:
        """ElasticFace+: the sorted draws handed out so that a smaller cos θ_y gets a larger margin."""
        order = torch.sort(cos_target, descending=True, stable=True).indices  # easiest row first
        margins = torch.empty_like(draws)
        margins[order.to(draws.device)] = torch.sort(draws).values  # ... gets the smallest margin
        return margins

    def _loss(self, embeddings: Tensor, weight: Tensor, target: Tensor) -> Tensor:
        """The fused loss with this step's drawn per-row margins (training mode), the mean margin otherwise."""
        if not self.training:
            return super()._loss(embeddings, weight, target)
        draws = self.draw(embeddings.shape[0])
        if self.plus:
            draws = self.by_difficulty(draws, target_cosines(embeddings, weight, target, self.group).cpu())
        margins = draws.to(device=embeddings.device, dtype=compute_dtype(embeddings, weight))
        per_row = {"m2": margins} if self.kind == "arc" else {"m3": margins}
        return margin_softmax_cross_entropy(embeddings, weight, target, self.margin, self.s, self.chunk_size,
                                            self.detach_margin, self.group, **per_row)
