"""Autocorrelation times and the block bootstrap on series with known statistics."""

import numpy as np
import pytest
from scipy.signal import lfilter

from dynamat.metrics.uncertainty import (
    block_bootstrap_mean_se,
    block_sizes,
    bootstrap_weights,
    choose_block_length,
    integrated_autocorrelation_time,
)


def ar1(n, phi, seed):
    """x_t = φ x_{t−1} + ε_t, unit-variance ε, started in its stationary distribution."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    e[0] /= np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], e)


@pytest.mark.parametrize("seed", range(3))
def test_block_bootstrap_se_of_ar1_mean_matches_analytic(seed):
    phi, n = 0.9, 20_000
    x = ar1(n, phi, seed)
    tau = integrated_autocorrelation_time(x)
    assert tau == pytest.approx((1 + phi) / (2 * (1 - phi)), rel=0.25)
    analytic = np.sqrt((1 / (1 - phi**2)) * (1 + phi) / (1 - phi) / n)
    se = block_bootstrap_mean_se(x, n_boot=500, seed=seed)
    assert se == pytest.approx(analytic, rel=0.3)
    # frame-by-frame resampling (blocks of 1) misses the correlation by ~sqrt(2 τ)
    naive = block_bootstrap_mean_se(x, block_length=1, n_boot=500, seed=seed)
    assert naive < 0.4 * analytic


def test_white_noise_has_tau_one_half():
    x = np.random.default_rng(0).normal(size=50_000)
    assert integrated_autocorrelation_time(x) == pytest.approx(0.5, abs=0.05)
    assert integrated_autocorrelation_time(np.ones(10)) == 0.5


def test_block_length_rule_and_clipping():
    assert choose_block_length(10_000, 9.5) == 100  # ⌈5 τ⌉ = 48 < M/100 = 100
    assert choose_block_length(100_000, 9.5) == 1000
    assert choose_block_length(1_000_000, 9.5) == 10_000
    assert choose_block_length(1_000_000, 2000.0) == 10_000  # ⌈5τ⌉ itself
    assert choose_block_length(1_000, 400.0) == 50  # at least 20 blocks
    assert choose_block_length(10, 0.5) == 1
    with pytest.raises(ValueError):
        choose_block_length(100, 0.0)
    assert block_sizes(10, 4).tolist() == [4, 4, 2]


def test_bootstrap_weights_draw_n_blocks_with_replacement():
    w = bootstrap_weights(7, 1000, np.random.default_rng(0))
    assert w.shape == (1000, 7)
    assert np.all(w.sum(1) == 7)
    assert w.mean() == pytest.approx(1.0, abs=0.05)
