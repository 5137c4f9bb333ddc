"""Bad inputs raise ValueError naming the offending index and value."""

from __future__ import annotations

import pytest
import torch

from marginface.heads import ArcFace, Softmax, SubCenterArcFace


@pytest.mark.parametrize("make", [lambda: ArcFace(8, 10), lambda: ArcFace(8, 10, chunk_size=3),
                                  lambda: Softmax(8, 10), lambda: SubCenterArcFace(8, 10)])
def test_label_out_of_range_names_index(make) -> None:
    head = make()
    with pytest.raises(ValueError, match=r"labels\[2\] = 10 is outside \[0, 10\)"):
        head(torch.randn(4, 8), torch.tensor([0, 1, 10, 3]))
    with pytest.raises(ValueError, match=r"labels\[0\] = -1"):
        head(torch.randn(4, 8), torch.tensor([-1, 1, 2, 3]))


def test_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, 8\), got \(4, 7\)"):
        ArcFace(8, 10)(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings(bad: float) -> None:
    x = torch.randn(4, 8)
    x[2, 5] = bad
    with pytest.raises(ValueError, match=r"embeddings\[2, 5\] is (nan|inf)"):
        ArcFace(8, 10)(x, torch.zeros(4, dtype=torch.long))


def test_label_shape_and_dtype() -> None:
    with pytest.raises(ValueError, match="labels must have shape"):
        ArcFace(8, 10)(torch.randn(4, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        ArcFace(8, 10)(torch.randn(4, 8), torch.zeros(4))
