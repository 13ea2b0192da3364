"""Exact intervals and tests with known answers (published Clopper-Pearson limits, binomial tail sums)."""

from __future__ import annotations

import pytest

from stegobench.eval.stats import binomial_cdf, clopper_pearson, sign_test


@pytest.mark.parametrize("k, n, low, high", [
    (0, 16, 0.0, 0.2059),   # a zero count is not [0, 0]
    (16, 16, 0.7941, 1.0),
    (0, 96, 0.0, 0.0377),   # 0 of 96 base answers bounds a false-positive rate only below 3.8%
    (1, 16, 0.0016, 0.3023),
    (5, 10, 0.1871, 0.8129),
])
def test_clopper_pearson_matches_published_limits(k, n, low, high):
    share, lo, hi = clopper_pearson(k, n)
    assert share == pytest.approx(k / n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_clopper_pearson_has_no_jump_between_zero_and_one():
    assert clopper_pearson(1, 16)[2] - clopper_pearson(0, 16)[2] < 0.1
    assert clopper_pearson(0, 0) == (None, None, None)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_binomial_cdf_is_finite_for_large_n():
    assert binomial_cdf(600, 1200, 0.5) == pytest.approx(0.5115, abs=1e-3)
    assert binomial_cdf(-1, 10, 0.3) == 0.0 and binomial_cdf(10, 10, 0.3) == 1.0


def test_sign_test_needs_six_units_to_reach_five_percent():
    assert sign_test(5, 0) == pytest.approx(0.0625)
    assert sign_test(6, 0) == pytest.approx(0.03125)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0


def test_the_beta_form_agrees_with_the_binomial_and_takes_fractional_counts():
    from stegobench.eval.stats import regularized_beta

    # P(X <= k) = I_{1-p}(n - k, k + 1)
    for k, n, p in [(0, 16, 0.1), (3, 16, 0.2), (40, 96, 0.45), (590, 1200, 0.5)]:
        assert regularized_beta(1 - p, n - k, k + 1) == pytest.approx(binomial_cdf(k, n, p), abs=1e-9)
    # A pooled share of 16 questions over seeds: 0.5 of a question sits between 0/16 and 1/16.
    assert clopper_pearson(0, 16)[2] < clopper_pearson(0.5, 16)[2] < clopper_pearson(1, 16)[2]


def test_a_share_is_never_narrower_than_its_exact_interval():
    from stegobench.eval.stats import with_exact

    assert with_exact(0.0, 0.0, 0.0, 16) == (0.0, 0.0, pytest.approx(0.2059, abs=1e-4))
    # A bootstrap wider than the exact interval (clustered data) is kept.
    assert with_exact(0.5, 0.05, 0.95, 16) == (0.5, 0.05, 0.95)
