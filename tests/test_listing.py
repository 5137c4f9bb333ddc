"""first_of: a few of many things in a message, then how many more."""

from __future__ import annotations

from marginface.listing import first_of


def test_all_items_when_they_fit_else_the_first_and_a_count() -> None:
    assert first_of([]) == ""
    assert first_of(["a", "b"], limit=2) == "a; b"
    assert first_of(["a", "b", "c"], limit=2) == "a; b; and 1 more"
    assert first_of(list(range(12)), sep=", ") == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, and 2 more"
