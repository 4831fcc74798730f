"""Intervals against hand-computed values, and the separation rule."""

from __future__ import annotations

import math

import pytest

from tasft_ray.stats import Interval, mean_interval, separation, wilson


def test_wilson_matches_the_formula_by_hand_and_the_published_tables():
    # k = 5 of n = 40, z = 1.96: p = 0.125, centre = (0.125 + 1.96²/80) / (1 + 1.96²/40)
    z = 1.959963984540054
    p, n = 0.125, 40
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    got = wilson(5, 40)
    assert (got.value, got.low, got.high, got.n) == pytest.approx((p, centre - half,
                                                                   centre + half, 40))
    # the rounded figures docs/results quotes for 5/40 and 86/518
    assert (round(got.low * 100, 1), round(got.high * 100, 1)) == (5.5, 26.1)
    big = wilson(86, 518)
    assert (round(big.low * 100, 1), round(big.high * 100, 1)) == (13.6, 20.1)
    # at the edges it stays in [0, 1] and is not zero-width (the normal interval would be)
    zero, full = wilson(0, 10), wilson(10, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(z * z / (10 + z * z))
    assert full.high == pytest.approx(1.0) and full.low == pytest.approx(10 / (10 + z * z))
    with pytest.raises(ValueError):
        wilson(3, 0)


def test_mean_interval_is_mean_plus_minus_z_s_over_root_n():
    values = [1.0, 2.0, 4.0, 5.0]  # mean 3, sample variance (4 + 1 + 1 + 4) / 3 = 10/3
    got = mean_interval(values)
    half = 1.959963984540054 * math.sqrt(10 / 3) / 2
    assert (got.value, got.low, got.high, got.n) == pytest.approx((3.0, 3 - half, 3 + half, 4))
    assert mean_interval([2.5]) == Interval(2.5, 2.5, 2.5, 1)


def test_separation_needs_disjoint_intervals_on_the_better_side():
    sft = Interval(0.17, 0.13, 0.20, 518)
    emd = Interval(0.066, 0.047, 0.090, 518)
    assert separation(emd, sft, "lower") == "yes"
    assert separation(sft, emd, "lower") == "worse"
    assert separation(emd, sft, "higher") == "worse"
    touching = Interval(0.15, 0.12, 0.13, 518)  # shares the endpoint 0.13: not told apart
    assert separation(touching, sft, "lower") == "no"
