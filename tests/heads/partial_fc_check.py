"""The Partial FC check the adaptive heads' tests share: loss and sparse gradients against a float64 reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

from marginface.heads import sample_classes

SAMPLE_RATE = 0.5  # build the head with this sample_rate
RTOL, ATOL = 1e-5, 1e-10


def check_partial_fc(head: torch.nn.Module, x0: torch.Tensor, w0: torch.Tensor, labels: torch.Tensor,
                     reference: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """`head`'s loss and gradients match reference(x, sampled centres, sampled targets) on the classes it samples."""
    with torch.no_grad():
        head.weight.copy_(w0)
    torch.manual_seed(7)
    sample = sample_classes(labels, w0.shape[0], SAMPLE_RATE)
    x = x0.clone().requires_grad_(True)
    w = w0[sample.index].clone().requires_grad_(True)
    expected = reference(x, w, sample.target)
    torch.manual_seed(7)  # the head draws the same class sample
    loss = head(x, labels)
    torch.testing.assert_close(loss, expected, rtol=RTOL, atol=0)
    gx, gw = torch.autograd.grad(loss, (x, head.weight))
    ref_gx, ref_gw = torch.autograd.grad(expected, (x, w))
    assert gw.is_sparse
    dense = torch.zeros_like(w0)
    dense[sample.index] = ref_gw
    for got, want in ((gx, ref_gx), (gw.to_dense(), dense)):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
