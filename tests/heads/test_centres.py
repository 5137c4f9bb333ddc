"""spread_centres: evenly spaced unit rows in 2-D, orthogonal rows when D ≥ C, other shapes refused."""

from __future__ import annotations

import math

import pytest
import torch

from marginface.heads import spread_centres


def test_two_dimensional_centres_are_evenly_spaced_unit_vectors() -> None:
    centres = spread_centres(8, 2)
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(8))
    angles = torch.atan2(centres[:, 1], centres[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles, torch.arange(8) * (math.pi / 4), atol=1e-6, rtol=0)


def test_wide_features_get_orthogonal_rows_and_other_shapes_are_refused() -> None:
    centres = spread_centres(5, 16)
    torch.testing.assert_close(centres @ centres.T, torch.eye(5))
    with pytest.raises(ValueError, match="3 dimensions for 8 classes"):
        spread_centres(8, 3)
    with pytest.raises(ValueError, match="at least one class"):
        spread_centres(0, 2)
