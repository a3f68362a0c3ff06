"""Tables shared by the studies that compare conditions (sampling strategies, latent sets): each
condition's score distribution with CIs, and accuracy per activation decile with CIs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from autointerp.analysis.stats import median_ci, t_ci

SUMMARY_COLUMNS = ["condition", "n", "n_failed", "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi"]
DECILE_COLUMNS = ["condition", "decile", "n", "mean", "ci_lo", "ci_hi"]


def of_scorer(scores: pd.DataFrame, scorer: str) -> pd.DataFrame:
    return scores[scores.scorer == scorer] if len(scores) else scores


def conditions_in_order(scores: pd.DataFrame) -> list[str]:
    """Sampling strategies in their canonical order; other conditions (latent sets) in the order
    the study ran them (a chunk's rows share one timestamp, so ties go by name)."""
    from autointerp.explain.sampling import STRATEGIES

    if scores.empty:
        return []
    names = set(scores.condition)
    if names <= set(STRATEGIES):
        return [s for s in STRATEGIES if s in names]
    first = scores.groupby("condition").created_at.min()
    return sorted(names, key=lambda c: (first[c], c))


def condition_summary(scores: pd.DataFrame, scorer: str, explanations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per condition: n latents with a score, failures (failed explanations and failed scores),
    mean with a t interval, median with an order-statistic interval."""
    s = of_scorer(scores, scorer)
    rows = []
    for condition in conditions_in_order(s):
        g = s[s.condition == condition]
        values = g.value.astype(float).to_numpy()
        ok = values[np.isfinite(values)]
        failed = int(len(values) - len(ok))
        if explanations is not None and len(explanations):
            e = explanations[explanations.condition == condition]
            failed += int(e.explanation.isna().sum())
        rows.append({"condition": condition, "n": len(ok), "n_failed": failed,
                     **dict(zip(("mean", "mean_lo", "mean_hi"), t_ci(ok))),
                     **dict(zip(("median", "median_lo", "median_hi"), median_ci(ok)))})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def decile_table(scores: pd.DataFrame, scorer: str) -> pd.DataFrame:
    """Accuracy per (condition, activation decile), decile 0 = silent windows: mean over latents
    with a t interval and the number of latents behind it."""
    s = of_scorer(scores, scorer)
    long = []
    for r in s[["condition", "latent", "accuracy_per_decile"]].itertuples(index=False):
        per = json.loads(r.accuracy_per_decile) if isinstance(r.accuracy_per_decile, str) else {}
        long += [(r.condition, int(q), float(a)) for q, a in per.items() if a is not None]
    if not long:
        return pd.DataFrame(columns=DECILE_COLUMNS)
    df = pd.DataFrame(long, columns=["condition", "decile", "accuracy"])
    order = {c: i for i, c in enumerate(conditions_in_order(s))}
    rows = [{"condition": c, "decile": d, "n": len(g), **dict(zip(("mean", "ci_lo", "ci_hi"), t_ci(g.accuracy)))}
            for (c, d), g in df.groupby(["condition", "decile"])]
    out = pd.DataFrame(rows, columns=DECILE_COLUMNS)
    return out.sort_values(["condition", "decile"], key=lambda col: col.map(order) if col.name == "condition" else col,
                           ignore_index=True)
