"""Confidence intervals shared by the studies: every number a study reports comes with its n and
a 95% interval, and an interval needs at least MIN_N values."""

from __future__ import annotations

import numpy as np
from scipy import stats

MIN_N = 3  # fewer values than this give no interval ("not enough data")
N_BOOT = 2000


def t_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval of the mean; NaN bounds below MIN_N values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    mean = float(v.mean())
    if len(v) < MIN_N or np.ptp(v) == 0:
        return (mean, np.nan, np.nan) if len(v) < MIN_N else (mean, mean, mean)
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * stats.sem(v))
    return mean, mean - half, mean + half


def bootstrap_ci(values, statistic=np.median, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(statistic, low, high): percentile bootstrap over the values; NaN bounds below MIN_N."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    point = float(statistic(v))
    if len(v) < MIN_N:
        return point, np.nan, np.nan
    rng = np.random.default_rng(seed)
    boots = statistic(rng.choice(v, size=(n_boot, len(v)), replace=True), axis=1)
    tail = (1 - level) / 2 * 100
    return point, float(np.percentile(boots, tail)), float(np.percentile(boots, 100 - tail))


def difference_ci(a, b, statistic=np.median, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """(statistic(a) - statistic(b), low, high): independent groups, each resampled on its own."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return np.nan, np.nan, np.nan
    point = float(statistic(a) - statistic(b))
    if min(len(a), len(b)) < MIN_N:
        return point, np.nan, np.nan
    rng = np.random.default_rng(seed)
    boots = (statistic(rng.choice(a, size=(n_boot, len(a))), axis=1)
             - statistic(rng.choice(b, size=(n_boot, len(b))), axis=1))
    tail = (1 - level) / 2 * 100
    return point, float(np.percentile(boots, tail)), float(np.percentile(boots, 100 - tail))
