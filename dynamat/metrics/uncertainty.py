"""Statistical uncertainty of trajectory observables: autocorrelation times and block bootstrap.

An MD trajectory is one correlated time series, so frames cannot be resampled one at a time:
neighbouring frames carry nearly the same information, and an i.i.d. bootstrap would report an
error bar too small by ~sqrt(2 τ_int). We resample contiguous, non-overlapping blocks of frames
instead (block bootstrap), with blocks several autocorrelation times long so that they are
nearly independent. Every observable here (RDF counts, pressures, VACF sums) is an average over
frames or time origins, so a replicate is the same average with per-block weights — the
multiplicity with which each block was drawn — and never needs the trajectory again.

The *noise floor* of an error metric is the same metric evaluated between the first and the
second half of the reference: how large the error is between two finite samples of the *same*
dynamics. Being computed on half-length samples it is somewhat larger than the floor at full
length (for a mean, by ~√2); an MLIP error at or below it is indistinguishable from perfect.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "block_bootstrap_mean_se",
    "block_sizes",
    "bootstrap_weights",
    "choose_block_length",
    "integrated_autocorrelation_time",
    "standard_error",
]


def integrated_autocorrelation_time(x, *, c: float = 5.0) -> float:
    """Integrated autocorrelation time τ_int of a scalar series, in frames.

    τ_int = ½ + Σ_{k=1}^{W} ρ(k), with ρ the normalised autocorrelation (FFT, biased estimator)
    and Sokal's automatic window: the smallest W with W ≥ c·τ_int(W). With this convention
    var(mean) ≈ 2 τ_int σ² / n, and uncorrelated data give τ_int = ½. For AR(1) with
    coefficient φ, τ_int = (1 + φ) / (2 (1 − φ)). A constant series returns ½.
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    if x.size < 2:
        raise ValueError("need at least 2 samples for an autocorrelation time")
    if not np.all(np.isfinite(x)):
        raise ValueError("series contains non-finite values")
    if c <= 0:
        raise ValueError(f"window factor c must be positive, got {c}")
    x = x - x.mean()
    n = len(x)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, n=nfft)
    acf = np.fft.irfft(f * f.conj(), n=nfft)[:n]
    if acf[0] <= 0:
        return 0.5
    rho = acf / acf[0]
    taus = 2.0 * np.cumsum(rho) - 1.0  # 2·τ_int(W) = 1 + 2 Σ_{k≤W} ρ(k)
    taus *= 0.5
    w = np.arange(n)
    ok = w >= c * taus
    win = int(np.argmax(ok)) if ok.any() else n - 1
    return float(max(taus[win], 0.5))


def choose_block_length(
    n_frames: int,
    tau_int: float,
    *,
    factor: float = 5.0,
    min_blocks: int = 20,
    max_blocks: int = 100,
) -> int:
    """Block length in frames for the block bootstrap.

    Rule: B = ⌈factor · τ_int⌉ (default 5 τ_int, i.e. 2.5 "independent samples" per block,
    which keeps the variance bias of block means below ~10 % for exponentially decaying
    correlations), then clipped so that the trajectory splits into between ``min_blocks`` and
    ``max_blocks`` blocks. The lower clip keeps the bootstrap itself from being noisy (with
    fewer than ~20 blocks the standard error of the standard error exceeds ~15 %) at the price
    of underestimating the error when τ_int is comparable to the run; the upper clip bounds
    memory and cost (the VACF accumulators scale with the number of blocks).
    """
    if n_frames < 1:
        raise ValueError("n_frames must be positive")
    if not np.isfinite(tau_int) or tau_int <= 0:
        raise ValueError(f"tau_int must be a positive number of frames, got {tau_int}")
    b = int(np.ceil(factor * tau_int))
    b = max(b, int(np.ceil(n_frames / max_blocks)))
    b = min(b, max(1, n_frames // min_blocks))
    return max(1, b)


def block_sizes(n_frames: int, block_length: int) -> np.ndarray:
    """Frames per block for contiguous blocks of ``block_length`` (the last may be shorter)."""
    k = -(-n_frames // block_length)
    sizes = np.full(k, block_length)
    sizes[-1] = n_frames - block_length * (k - 1)
    return sizes


def bootstrap_weights(n_blocks: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_blocks) multiplicities: each replicate draws n_blocks blocks with replacement."""
    if n_blocks < 1 or n_boot < 1:
        raise ValueError("n_blocks and n_boot must be positive")
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks))
    draws += n_blocks * np.arange(n_boot)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n_blocks)
    return counts.reshape(n_boot, n_blocks).astype(float)


def standard_error(replicates) -> float | None:
    """Standard deviation of bootstrap replicates (ddof = 1), ignoring NaN; None if < 2 finite."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    return float(r.std(ddof=1)) if len(r) >= 2 else None


def block_bootstrap_mean_se(
    x, *, block_length: int | None = None, n_boot: int = 1000, seed: int = 0
) -> float:
    """Block-bootstrap standard error of the mean of a correlated series.

    ``block_length`` defaults to :func:`choose_block_length` applied to
    :func:`integrated_autocorrelation_time` of the series.
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    if block_length is None:
        block_length = choose_block_length(len(x), integrated_autocorrelation_time(x))
    sizes = block_sizes(len(x), int(block_length))
    ids = np.repeat(np.arange(len(sizes)), sizes)
    sums = np.bincount(ids, weights=x)
    w = bootstrap_weights(len(sizes), n_boot, np.random.default_rng(seed))
    return standard_error((w @ sums) / (w @ sizes))
