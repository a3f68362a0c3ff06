"""The steering strength at which the next-token KL hits a target.

Strengths differ by orders of magnitude between latents, hookpoints and models, so the search runs
on x = log10(alpha) in [-3, 4] (delphi's range) and reads KL on a log scale: for small alpha the
KL grows as alpha^2 (a straight line of slope 2 in these coordinates), later it saturates. Each
step is one forward over the prompts:
  no point above the target yet   extrapolate up from the highest point below, with the slope of
                                  the last two points below (slope 2 until there are two)
  no point below the target yet   extrapolate down from the lowest point above with slope 2
  bracketed                       interpolate between the bracket's ends in (x, log KL), kept inside
                                  the bracket's middle 90% so it always shrinks
A target is reached when |KL - target| <= rtol x target. Evaluations are shared between targets
(searched in increasing order), so later targets usually start bracketed. A target that the range
cannot reach is reported with reached=False and the closest point found, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

LOG10_ALPHA_RANGE = (-3.0, 4.0)
MAX_ITER = 20  # forward evaluations per target
START = 0.0  # alpha = 1: the norm of a unit direction
_LN10 = math.log(10)
_MAX_STEP = 2.0  # decades per extrapolation step


@dataclass
class AlphaResult:
    target: float
    alpha: float
    kl: float
    reached: bool
    iterations: int  # evaluations this target needed (points found for earlier targets are free)


def _log(kl: float) -> float:
    return math.log(max(kl, 1e-12))


def _propose(memo: dict[float, float], target: float, lo: float, hi: float) -> float | None:
    """The next log10 alpha to try, or None when the range cannot reach the target."""
    if not memo:
        return START
    below = sorted(x for x, k in memo.items() if k < target)
    above = sorted(x for x, k in memo.items() if k > target)
    if above:
        h = above[0]  # the lowest crossing: the smallest strength that overshoots
        under = [x for x in below if x < h]
        if under:
            low = under[-1]
            f = (_log(target) - _log(memo[low])) / (_log(memo[h]) - _log(memo[low]))
            return low + min(max(f, 0.05), 0.95) * (h - low)
        if h <= lo:
            return None  # even the smallest strength overshoots
        return max(h - (_log(memo[h]) - _log(target)) / (2 * _LN10), h - _MAX_STEP, lo)
    top = below[-1]
    if top >= hi:
        return None  # even the largest strength falls short
    slope = 2 * _LN10
    if len(below) >= 2:
        prev = below[-2]
        secant = (_log(memo[top]) - _log(memo[prev])) / (top - prev)
        slope = min(max(secant, 0.25 * _LN10), 3 * _LN10)
    return min(top + (_log(target) - _log(memo[top])) / slope, top + _MAX_STEP, hi)


def find_alpha(kl_at: Callable[[float], float], target: float, rtol: float = 0.1,
               memo: dict[float, float] | None = None, log10_range: tuple[float, float] = LOG10_ALPHA_RANGE,
               max_iter: int = MAX_ITER) -> AlphaResult:
    """Search alpha so that kl_at(alpha) is within rtol of target. `memo` (log10 alpha -> KL) is
    read and extended, so calls for several targets share their evaluations."""
    memo = {} if memo is None else memo
    lo, hi = log10_range
    evals = 0

    def within(k: float) -> bool:
        return abs(k - target) <= rtol * target

    while True:
        hits = [x for x, k in memo.items() if within(k)]
        if hits:
            best = min(hits, key=lambda x: (abs(_log(memo[x]) - _log(target)), x))
            return AlphaResult(target, 10 ** best, memo[best], True, evals)
        x = _propose(memo, target, lo, hi) if evals < max_iter else None
        if x is None or x in memo:
            break
        kl = kl_at(10 ** x)
        memo[x] = kl if math.isfinite(kl) else math.inf  # an overflowing model overshoots every target
        evals += 1
    best = min(memo, key=lambda x: (abs(_log(memo[x]) - _log(target)), x))
    return AlphaResult(target, 10 ** best, memo[best], False, evals)


def search_alphas(kl_at: Callable[[float], float], targets: list[float], rtol: float = 0.1,
                  max_iter: int = MAX_ITER) -> dict[float, AlphaResult]:
    """find_alpha for each target, smallest first, sharing every evaluation."""
    memo: dict[float, float] = {}
    return {t: find_alpha(kl_at, t, rtol, memo, max_iter=max_iter) for t in sorted(set(targets))}
