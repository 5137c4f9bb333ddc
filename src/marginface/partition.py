"""Splitting a range among processes (no dependencies on the rest of marginface)."""

from __future__ import annotations


def even_share(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous share of `total` items (the first ranks take the remainder):
    its class centres, and its slice of every global batch."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
