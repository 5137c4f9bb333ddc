"""Seed derivation: the named streams keep the exact values committed results were produced with."""

from __future__ import annotations

from marginface.seeding import flip_seed, item_seed, loader_seed, permutation_seed, rank_seed, stream


def test_named_streams_keep_their_values() -> None:
    assert rank_seed(7, 0) == 7 and rank_seed(7, 2) == 7 + 2 * 1_000_003
    assert flip_seed(3, 5, 1) == 3 * 1_000_003 + 5 * 7919 + 1
    assert permutation_seed(2, 4) == 2 * 100_003 + 4
    assert loader_seed(2, 4) == 6
    assert item_seed(2**62, 1) == (2**62 * 1_000_003 + 1) % 2**63


def test_stream_is_a_pure_function_of_its_keys() -> None:
    assert stream(1, 2, 3).random() == stream(1, 2, 3).random() != stream(1, 2, 4).random()
    assert stream(-1).random() == stream(0xFFFFFFFF).random()  # keys are taken modulo 2**32
