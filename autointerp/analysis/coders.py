"""SAE latents vs neurons: random latents of each latent set (an SAE, raw neurons, top-k neurons,
random directions) explained and scored alike. The sets hold different latents, so they are
compared as independent groups: the difference of medians to the reference set (the first, an
SAE) with a bootstrap CI."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autointerp.analysis.conditions import condition_summary, decile_table, of_scorer  # noqa: F401
from autointerp.analysis.stats import difference_ci

KIND_ORDER = ("sae", "sparsify", "neurons", "topk", "random")


def coder_summary(scores: pd.DataFrame, scorer: str, reference: str | None = None,
                  explanations: pd.DataFrame | None = None) -> pd.DataFrame:
    """condition_summary plus median(set) - median(reference) with its bootstrap CI."""
    out = condition_summary(scores, scorer, explanations)
    if out.empty:
        return out.assign(vs=None, median_diff=np.nan, median_diff_lo=np.nan, median_diff_hi=np.nan)
    reference = reference if reference in set(out.condition) else out.condition.iloc[0]
    s = of_scorer(scores, scorer)
    ref = s[s.condition == reference].value.astype(float)
    extra = []
    for c in out.condition:
        d = difference_ci(s[s.condition == c].value.astype(float), ref) if c != reference else (np.nan,) * 3
        extra.append(dict(zip(("median_diff", "median_diff_lo", "median_diff_hi"), d), vs=reference))
    return pd.concat([out, pd.DataFrame(extra)], axis=1)
