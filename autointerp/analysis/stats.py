"""Confidence intervals shared by the studies: every number a study reports comes with its n and
a 95% interval, and an interval needs at least MIN_N values."""

from __future__ import annotations

import numpy as np
from scipy import stats

from autointerp.score.metrics import MIN_N, t_ci  # noqa: F401  (the studies' t interval is the scorers' one)

N_BOOT = 2000  # resamples of the bootstraps that remain (rank correlations between scorers)
EXACT_FLIPS_UP_TO = 12  # 2^12 sign patterns; more latents: a seeded random sample of patterns


def sign_flip_p(diffs, n_random: int = 10_000, seed: int = 0) -> float:
    """One-sided p-value of mean(diffs) > 0 by the sign-flip permutation test: under the null the
    paired differences are symmetric about 0, so every flip of their signs is equally likely. Exact
    (all 2^n flips) up to EXACT_FLIPS_UP_TO latents, else n_random seeded random flips (the
    observed pattern included, so p is never 0). Unlike a percentile bootstrap
    of the mean (which rejected 4-13 % of null data sets at a nominal 2.5 % with 3-10 latents) it
    holds its level at any n."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    observed = d.mean()
    if len(d) <= EXACT_FLIPS_UP_TO:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(n_random, len(d)))
        signs[0] = 1
    means = signs @ d / len(d)
    # >= with a small tolerance: flips that tie the observed mean count against the claim
    return float(np.mean(means >= observed - 1e-12 * max(1.0, abs(observed))))


def median_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the distribution-free interval between two order statistics, chosen by
    the binomial(n, 1/2) law of how many values fall below the median, so it holds its level at any
    n (a percentile bootstrap of a median under-covers at a few dozen values). NaN bounds below
    MIN_N values, and where n is too small for any pair of order statistics to reach the level
    (n < 6 at 95 %)."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    point = float(np.median(v))
    n = len(v)
    # j = the smallest k with P(B <= k) >= alpha/2, so P(B <= j - 1) < alpha/2: the values below
    # the j-th and above the (n-j+1)-th each hold the median with probability < alpha/2
    j = int(stats.binom.ppf((1 - level) / 2, n, 0.5))
    if n < MIN_N or j < 1:
        return point, np.nan, np.nan
    return point, float(v[j - 1]), float(v[n - j])


def welch_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's t interval for two independent groups of unequal
    variance (the latent sets of the coders study, a decoder match against its null). NaN bounds
    when either group has fewer than MIN_N values."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    if min(len(a), len(b)) < MIN_N:
        return diff, np.nan, np.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return diff, diff - half, diff + half
