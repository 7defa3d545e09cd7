"""The one lower-convex-hull helper (fxenergy.schedule.hull) used by both planners."""

from __future__ import annotations

from itertools import pairwise
from operator import itemgetter

from hypothesis import given
from hypothesis import strategies as st

from fxenergy.schedule.hull import lower_hull

T, E = itemgetter(0), itemgetter(1)


def test_hull_by_hand():
    pts = [(1, 10), (2, 6), (3, 5), (4, 1), (5, 3), (2, 9), (0.5, 12)]
    # (1, 10) is on the segment (0.5, 12)-(2, 6) and (3, 5) above (2, 6)-(4, 1); (5, 3) is past
    # the least energy.
    assert lower_hull(pts, T, E) == [(0.5, 12), (2, 6), (4, 1)]
    assert lower_hull([(1, 1)], T, E) == [(1, 1)]
    assert lower_hull([], T, E) == []


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50)), min_size=1, max_size=12))
def test_hull_is_convex_decreasing_and_below_every_point(pts):
    hull = lower_hull(pts, T, E)
    fastest = min(pts)
    assert hull[0] == fastest and hull[-1][1] == min(e for t, e in pts if t >= fastest[0])
    assert all(b[0] > a[0] and b[1] < a[1] for a, b in pairwise(hull))
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairwise(hull)]
    assert all(s2 >= s1 for s1, s2 in pairwise(slopes))
    for t, e in pts:  # every option at or above the envelope where the envelope is defined
        for a, b in pairwise(hull):
            if a[0] <= t <= b[0]:
                assert e * (b[0] - a[0]) >= a[1] * (b[0] - a[0]) + (b[1] - a[1]) * (t - a[0])
