"""Intervals for the numbers a sweep reports, and whether two settings are told apart by them.

A count of harmful answers out of n prompts gets a 95 % Wilson score interval (it stays inside
[0, 1] and is honest at 0 or n, where the normal one is not); a mean over held-out responses
(negative log-likelihood per token) gets the normal interval mean ± 1.96 · s / √n. Two settings
are *separated* on a measure when their intervals do not overlap — a conservative reading (two
intervals can overlap a little while a test of the difference still rejects), which is the
point: a quickstart that says "separated" should not be one lucky draw. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % interval, and the sample size behind it."""

    value: float
    low: float
    high: float
    n: int

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


def wilson(k: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of ``k`` successes in ``n`` trials (rate, low, high)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_interval(values: Sequence[float], z: float = Z95) -> Interval:
    """The mean of ``values`` with the normal interval mean ± z · s / √n (s: the sample
    standard deviation); a single value has a zero-width interval."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval: no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


Better = Literal["lower", "higher"]


def separation(candidate: Interval, baseline: Interval, better: Better) -> str:
    """``yes`` when the intervals do not overlap and the candidate is on the better side,
    ``worse`` when they do not overlap the other way, else ``no``."""
    if candidate.overlaps(baseline):
        return "no"
    below = candidate.high < baseline.low
    return "yes" if below == (better == "lower") else "worse"
