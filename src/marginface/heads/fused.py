"""Fused margin-softmax cross entropy: normalised matmul, margin, scale and CE in one autograd Function.

The class dimension is walked in blocks so that every element-wise step runs on cache-sized tiles:
 - full mode keeps each block's exponentials for the backward pass (one B × C buffer, no other);
 - chunked mode keeps nothing of size B × C: the forward pass is an online log-sum-exp over blocks and
   the backward pass recomputes each block, so peak memory is O(B · chunk + C) beyond the weights.
Both modes give the same loss and gradients. The weight rows are normalised on the fly (their norms
scale the logits' columns), so no normalised C × D copy of the weights is ever made.

When a process group is given the weight is this rank's shard of the classes (model parallel): the
maximum, the normaliser and the target logit are all-reduced; the embedding gradient returned is this
shard's share (the caller's autograd-aware all_gather sums the shares).

Adaptive heads add two things, both optional: per-row margins m2_b, m3_b (AdaFace, MagFace, ElasticFace;
their gradient is returned, so a margin computed from the feature norm passes its gradient on), and
CurricularFace's re-weighting of hard negatives, N(c) = c·(t + c) where c exceeds the row's target logit
(before the scale). Re-weighted negatives need their cosines in the backward pass: full mode then keeps the
B × C cosines instead of the exponentials and redoes the exp (element-wise, no extra matmul).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from marginface.heads.logits import NORM_EPS, unit_rows_and_norms
from marginface.heads.margin import Margin
from marginface.precision import compute_dtype

# Block width (classes) used by full mode: small enough that a B × block tile stays in cache.
FULL_MODE_BLOCK = 4096


def _all_reduce(tensor: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> Tensor:
    """All-reduce in place across `group`; a no-op for single-process use."""
    if group is not None:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _blocks(num_classes: int, width: int) -> list[tuple[int, int]]:
    """Split [0, num_classes) into consecutive (start, stop) blocks of at most `width` classes."""
    return [(start, min(start + width, num_classes)) for start in range(0, num_classes, width)]


def _block_logits(
    xh: Tensor, w: Tensor, inv_wn: Tensor, start: int, stop: int, scale: float,
    rows: Tensor, cols: Tensor, target_logit: Tensor,
) -> Tensor:
    """Scaled cosine logits of one class block, with the margin-transformed target logits put in place."""
    block = torch.mm(xh, w[start:stop].t().to(xh.dtype))
    block.mul_(inv_wn[start:stop].mul(scale))
    _put_targets(block, start, stop, rows, cols, target_logit)
    return block


def _put_targets(block: Tensor, start: int, stop: int, rows: Tensor, cols: Tensor, values: Tensor) -> None:
    """In place: the entries (row, class) of this block that are targets get `values`."""
    inside = (cols >= start) & (cols < stop)
    if bool(inside.any()):
        block[rows[inside], cols[inside] - start] = values[inside]


def _block_cosines(xh: Tensor, w: Tensor, inv_wn: Tensor, start: int, stop: int) -> Tensor:
    """(B, stop − start) cosines of one class block."""
    return torch.mm(xh, w[start:stop].t().to(xh.dtype)).mul_(inv_wn[start:stop])


def _curriculum_logits(cos: Tensor, threshold: Tensor, t: Tensor, scale: float) -> Tensor:
    """s·N(cos): CurricularFace's hard negatives (cos above the row's target logit) become cos·(t + cos)."""
    hard = cos > threshold.unsqueeze(1)
    return torch.where(hard, cos * (t + cos), cos).mul_(scale)


def _curriculum_slope(cos: Tensor, threshold: Tensor, t: Tensor) -> Tensor:
    """dN/dcos: t + 2·cos on hard negatives, 1 elsewhere (t is a constant of the step)."""
    hard = cos > threshold.unsqueeze(1)
    return torch.where(hard, t + 2.0 * cos, torch.ones_like(cos))


def target_cosines(embeddings: Tensor, weight: Tensor, target: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """(B,) cos θ_y of every row (no gradient): each rank computes the rows whose class it owns and the
    vector is all-reduced, so every rank of a model-parallel group holds the global batch's."""
    with torch.no_grad(), torch.autocast(device_type=embeddings.device.type, enabled=False):
        dtype = compute_dtype(embeddings, weight)
        cos = torch.zeros(embeddings.shape[0], dtype=dtype, device=embeddings.device)
        rows = torch.nonzero(target >= 0).squeeze(1)
        xh, _ = unit_rows_and_norms(embeddings[rows].to(dtype))
        wt, _ = unit_rows_and_norms(weight[target[rows]].to(dtype))
        cos[rows] = torch.linalg.vecdot(xh, wt, dim=1)
        return _all_reduce(cos, dist.ReduceOp.SUM, group)


def _project_out_rows(grad: Tensor, w: Tensor, inv_wn: Tensor) -> None:
    """In place: grad_j ← grad_j − (grad_j · w_j) ‖w_j‖⁻² w_j, the chain rule through w_j / ‖w_j‖."""
    w = w.to(grad.dtype)
    along = torch.linalg.vecdot(grad, w, dim=1).mul_(inv_wn.square())
    grad.addcmul_(w, along.unsqueeze(1), value=-1.0)


class MarginSoftmaxCrossEntropy(torch.autograd.Function):
    """mean_b CE(s · [cos θ_bj with ψ-margin on j = y_b], y_b) with a hand-written, matmul-bound backward."""

    @staticmethod
    def forward(ctx, *args):  # type: ignore[override]
        """Runs `_forward` with autocast off: the head's matmuls and margin math stay in float32."""
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            return MarginSoftmaxCrossEntropy._forward(ctx, *args)

    @staticmethod
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        """Runs `_backward` with autocast off."""
        with torch.autocast(device_type=grad_loss.device.type, enabled=False):
            return MarginSoftmaxCrossEntropy._backward(ctx, grad_loss)

    @staticmethod
    def _forward(
        ctx, embeddings: Tensor, weight: Tensor, target: Tensor, m2: Tensor | None, m3: Tensor | None,
        margin: Margin, scale: float, chunk_size: int | None, detach_margin: bool,
        group: dist.ProcessGroup | None, curriculum_t: Tensor | None,
    ) -> Tensor:
        """`target` holds each row's class as a local row of `weight`, or −1 when another shard owns it;
        `m2`, `m3` (B,) per-row margins or None; `curriculum_t` CurricularFace's t or None."""
        dtype = compute_dtype(embeddings, weight)
        x = embeddings.detach().to(dtype)
        w = weight.detach()
        batch, num_classes = x.shape[0], w.shape[0]
        xh, x_norm = unit_rows_and_norms(x)
        inv_wn = torch.linalg.vector_norm(w.to(dtype), dim=1).clamp_min(NORM_EPS).reciprocal()

        rows = torch.nonzero(target >= 0).squeeze(1)
        cols = target[rows]
        cos_t = torch.linalg.vecdot(xh[rows], w[cols].to(dtype), dim=1) * inv_wn[cols]
        row_m2 = None if m2 is None else m2.detach().to(dtype)[rows]
        row_m3 = None if m3 is None else m3.detach().to(dtype)[rows]
        value, slope, slope_m2 = margin.target_logit_and_grads(cos_t, detach_margin, row_m2, row_m3)
        target_logit = value.to(dtype) * scale

        threshold = t = None
        if curriculum_t is not None:  # every rank needs every row's target logit for its own negatives
            threshold = torch.zeros(batch, dtype=dtype, device=x.device)
            threshold[rows] = value.to(dtype)
            _all_reduce(threshold, dist.ReduceOp.SUM, group)
            t = curriculum_t.detach().to(dtype)

        store = chunk_size is None
        blocks = _blocks(num_classes, FULL_MODE_BLOCK if store else chunk_size)
        kept: list[Tensor] = []
        block_max = torch.empty(len(blocks), batch, dtype=dtype, device=x.device)
        block_sum = torch.empty(len(blocks), batch, dtype=dtype, device=x.device)
        for i, (start, stop) in enumerate(blocks):
            if threshold is None:
                z = _block_logits(xh, w, inv_wn, start, stop, scale, rows, cols, target_logit)
            else:
                cos = _block_cosines(xh, w, inv_wn, start, stop)
                z = _curriculum_logits(cos, threshold, t, scale)
                _put_targets(z, start, stop, rows, cols, target_logit)
                if store:
                    kept.append(cos)
            block_max[i] = z.amax(dim=1)
            z.sub_(block_max[i].unsqueeze(1)).exp_()
            block_sum[i] = z.sum(dim=1)
            if store and threshold is None:
                kept.append(z)
        row_max = _all_reduce(block_max.amax(dim=0), dist.ReduceOp.MAX, group)
        rescale = torch.exp(block_max - row_max)
        row_sum = _all_reduce((block_sum * rescale).sum(dim=0), dist.ReduceOp.SUM, group)
        lse = row_max + torch.log(row_sum)

        z_target = torch.zeros(batch, dtype=dtype, device=x.device)
        z_target[rows] = target_logit
        _all_reduce(z_target, dist.ReduceOp.SUM, group)
        loss = (lse - z_target).mean()

        ctx.margin_args = (scale, blocks, store, group, embeddings.dtype, weight.dtype,
                           None if m2 is None else m2.dtype, None if m3 is None else m3.dtype)
        # p_bj = kept_bj · exp(block_max_b − lse_b): keep the per-block row factor, not normalised copies.
        ctx.kept = kept
        ctx.curriculum = (threshold, t)
        ctx.slope_m2 = slope_m2
        ctx.save_for_backward(xh, x_norm, w, inv_wn, rows, cols, slope, lse, target_logit,
                              torch.exp(block_max - lse))
        return loss

    @staticmethod
    def _backward(ctx, grad_loss: Tensor):
        """Gradients for embeddings, weight and per-row margins; None for the non-tensor arguments."""
        xh, x_norm, w, inv_wn, rows, cols, slope, lse, target_logit, row_factor = ctx.saved_tensors
        scale, blocks, store, group, x_dtype, w_dtype, m2_dtype, m3_dtype = ctx.margin_args
        threshold, t = ctx.curriculum
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # The kept exponentials are turned into gradients in place: a second backward (retain_graph)
        # finds them consumed and recomputes, exactly as chunked mode does.
        store = store and bool(ctx.kept)
        batch = xh.shape[0]
        dtype = xh.dtype
        coef = grad_loss.to(dtype) * (scale / batch)
        # dL/dcos at the target entries: (p_t − 1) · coef · dψ/dcos, before the 1/‖w‖ column factor.
        p_target = torch.exp(target_logit - lse[rows])
        target_coef = (p_target - 1.0) * coef
        target_grad = target_coef * slope.to(dtype)

        grad_xh = torch.zeros_like(xh) if need_x else None
        grad_w = torch.empty(w.shape, dtype=dtype, device=w.device) if need_w else None
        col_factor = inv_wn * coef
        for i, (start, stop) in enumerate(blocks):
            if threshold is not None:
                cos = ctx.kept[i] if store else _block_cosines(xh, w, inv_wn, start, stop)
                g = _curriculum_logits(cos, threshold, t, scale)
                g.sub_(lse.unsqueeze(1)).exp_().mul_(_curriculum_slope(cos, threshold, t))
                g.mul_(col_factor[start:stop].unsqueeze(0))
            elif store:
                g = ctx.kept[i]
                g.mul_(row_factor[i].unsqueeze(1) * col_factor[start:stop].unsqueeze(0))
            else:
                g = _block_logits(xh, w, inv_wn, start, stop, scale, rows, cols, target_logit)
                g.sub_(lse.unsqueeze(1)).exp_().mul_(col_factor[start:stop].unsqueeze(0))
            inside = (cols >= start) & (cols < stop)
            if bool(inside.any()):
                local = cols[inside]
                g[rows[inside], local - start] = target_grad[inside] * inv_wn[local]
            w_block = w[start:stop].to(dtype)
            if grad_xh is not None:
                grad_xh.addmm_(g, w_block)
            if grad_w is not None:
                torch.mm(g.t(), xh, out=grad_w[start:stop])
                _project_out_rows(grad_w[start:stop], w_block, inv_wn[start:stop])
        ctx.kept = []

        grad_x = None
        if grad_xh is not None:
            # With a group this is the local shard's share; the autograd-aware all_gather that produced the
            # embeddings sums the shares across ranks in its backward.
            along = torch.linalg.vecdot(grad_xh, xh, dim=1).unsqueeze(1)
            grad_x = ((grad_xh - along * xh) / x_norm.unsqueeze(1)).to(x_dtype)
        if grad_w is not None and grad_w.dtype != w_dtype:
            grad_w = grad_w.to(w_dtype)
        grad_m2 = grad_m3 = None
        if ctx.needs_input_grad[3]:  # dL/dm2_b = (p_t − 1)·coef·dψ/dm2 on the rows this shard owns
            grad_m2 = torch.zeros(batch, dtype=dtype, device=xh.device)
            grad_m2[rows] = target_coef * ctx.slope_m2.to(dtype)
            grad_m2 = grad_m2.to(m2_dtype)
        if ctx.needs_input_grad[4]:  # the target logit is … − m3_b
            grad_m3 = torch.zeros(batch, dtype=dtype, device=xh.device)
            grad_m3[rows] = -target_coef
            grad_m3 = grad_m3.to(m3_dtype)
        return grad_x, grad_w, None, grad_m2, grad_m3, None, None, None, None, None, None


def margin_softmax_cross_entropy(
    embeddings: Tensor, weight: Tensor, target: Tensor, margin: Margin, scale: float,
    chunk_size: int | None = None, detach_margin: bool = False,
    group: dist.ProcessGroup | None = None, *, m2: Tensor | None = None, m3: Tensor | None = None,
    curriculum_t: Tensor | None = None,
) -> Tensor:
    """Mean margin-softmax CE of `embeddings` (B, D) against class centres `weight` (C, D).

    `target[b]` is row b's class as a row index of `weight` (−1: owned by another rank of `group`).
    `chunk_size=None` keeps one B × C buffer for the backward pass; an int bounds memory instead.
    `m2`, `m3`: (B,) per-row margins replacing margin.m2 / margin.m3 (differentiable); `curriculum_t`:
    CurricularFace's t, re-weighting negatives whose cosine exceeds the row's target logit.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of classes or None, got {chunk_size}")
    for name, value in (("m2", m2), ("m3", m3)):
        if value is not None and value.shape != (embeddings.shape[0],):
            raise ValueError(f"per-row margin {name} must have shape ({embeddings.shape[0]},), "
                             f"got {tuple(value.shape)}")
    return MarginSoftmaxCrossEntropy.apply(
        embeddings, weight, target.to(torch.long), m2, m3, margin, float(scale), chunk_size, detach_margin, group,
        curriculum_t,
    )
