"""Sampling strategies (the paper's Fig. 3): the same latents explained from top, random,
quantile and mixed examples, all scored on one shared test set per latent. Because every latent
has a score under every strategy, strategies are compared by paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autointerp.analysis.conditions import condition_summary, conditions_in_order, decile_table, of_scorer  # noqa: F401
from autointerp.analysis.stats import MIN_N, t_ci


def strategy_summary(scores: pd.DataFrame, scorer: str, explanations: pd.DataFrame | None = None) -> pd.DataFrame:
    """condition_summary plus, per strategy, the mean paired difference to the first strategy
    (the latents scored under both) with a Student t interval (a percentile bootstrap of a mean
    under-covers at these sizes)."""
    out = condition_summary(scores, scorer, explanations)
    s = of_scorer(scores, scorer)
    if out.empty:
        return out.assign(vs=None, diff=np.nan, diff_lo=np.nan, diff_hi=np.nan, n_paired=0)
    wide = s.pivot_table(index="latent", columns="condition", values="value", aggfunc="first")
    ref = out.condition.iloc[0]
    extra = []
    for c in out.condition:
        both = wide[[ref, c]].dropna() if c in wide and ref in wide else pd.DataFrame()
        d = (both[c] - both[ref]).to_numpy() if len(both) else np.array([])
        lo, hi = t_ci(d)[1:] if len(d) >= MIN_N and c != ref else (np.nan, np.nan)
        extra.append({"vs": ref, "diff": float(d.mean()) if len(d) else np.nan, "diff_lo": lo, "diff_hi": hi,
                      "n_paired": int(len(d))})
    return pd.concat([out, pd.DataFrame(extra)], axis=1)
