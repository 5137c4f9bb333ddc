"""How a message names a few of many things: the first ones, then how many more."""

from __future__ import annotations

from collections.abc import Sequence


def first_of(items: Sequence[object], limit: int = 10, sep: str = "; ") -> str:
    """The first `limit` items joined by `sep`, then 'and N more' (after `sep`) when there are more."""
    shown = sep.join(str(item) for item in items[:limit])
    return shown + (f"{sep}and {len(items) - limit} more" if len(items) > limit else "")
