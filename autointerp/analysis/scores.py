"""Scorer analyses over a run's stored results: pandas/scipy only, all reads through RunStore.

The paper compares scorers by the Spearman correlation of their per-latent scores (its Table 1)
and explanation quality by activation decile (its Fig. 3); these functions compute both from the
latest score per (hookpoint, latent, scorer), so a rerun replaces rather than double-counts.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from autointerp.analysis.stats import t_ci
from autointerp.config import SCORER_SPECS, SCORERS
from autointerp.store import RunStore

KEYS = ["hookpoint", "latent"]
# the number each scorer is judged by (registered in config.SCORER_SPECS); classifiers without
# probabilities have no AUROC; intervention's is in nats, at the target KL nearest 1 (target_kl)
HEADLINE = {s.name: s.headline for s in SCORER_SPECS.values()}
DEFAULT_HEADLINE = ("auroc", "balanced_accuracy", "correlation")
# the range each scorer's headline can take (for filters and axes); AUROC-like ones live in [0, 1]
SCORE_RANGE = {s.name: s.score_range for s in SCORER_SPECS.values()}


def score_range(scorer: str) -> tuple[float, float]:
    return SCORE_RANGE.get(scorer, (0.0, 1.0))
HEADLINE_LABEL = ("AUROC (balanced accuracy where a scorer gave no probabilities); simulation: Pearson r; "
                  "intruder: share of right calls (chance 0.2); "
                  "intervention: log P(explanation) gain on steered text, nats, at KL 1")


# what a score means nothing at: AUROC and balanced accuracy 0.5, correlations and gains 0, intruder 1/5
CHANCE = {s.name: s.chance for s in SCORER_SPECS.values()}


def chance(scorer: str) -> float:
    return CHANCE.get(scorer, 0.5)


def headline_interval(scores: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(low, high) of each score row's 95 % interval, for the metric headline() picks (its
    <metric>_lo / _hi columns); NaN where that metric has none (parts written before intervals)."""
    lo = pd.Series(np.nan, index=scores.index, dtype=float)
    hi = lo.copy()
    for scorer, rows in scores.groupby("scorer"):
        for metric in HEADLINE.get(scorer, DEFAULT_HEADLINE):
            if metric not in rows:
                continue
            use = rows.index[rows[metric].notna() & lo.loc[rows.index].isna()]
            for bound, out in (("_lo", lo), ("_hi", hi)):
                if metric + bound in rows:
                    out.loc[use] = rows.loc[use, metric + bound].astype(float)
    return lo, hi


def interval_table(store: RunStore, hookpoint: str | None = None, scores: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """One row per current score (or per row of `scores`, already read): hookpoint, latent, scorer,
    value, lo, hi (95 %), n, and `includes_chance` (None where no interval was stored)."""
    scores = store.current_scores(hookpoint) if scores is None else scores
    if scores.empty:
        return pd.DataFrame(columns=[*KEYS, "scorer", "value", "lo", "hi", "n", "includes_chance"])
    lo, hi = headline_interval(scores)
    out = scores[[*KEYS, "scorer", "n"]].assign(value=headline(scores), lo=lo, hi=hi)
    out["includes_chance"] = includes_chance_column(out.lo, out.hi, out.scorer)
    return out


def includes_chance_column(lo: pd.Series, hi: pd.Series, scorer: pd.Series) -> pd.Series:
    """Whether each 95 % interval holds its scorer's chance level: True/False, None where there is
    no interval (scores stored before intervals). Whole columns at once: a 131k-latent set has 131k
    rows per scorer."""
    level = scorer.map({x: chance(x) for x in scorer.unique()}).astype(float)
    holds = ((lo <= level) & (level <= hi)).astype(object)
    return holds.where(lo.notna() & hi.notna(), None)


def headline(scores: pd.DataFrame) -> pd.Series:
    """Each score row's headline metric: the first non-null of its scorer's metrics."""
    out = pd.Series(np.nan, index=scores.index, dtype=float)
    for scorer, rows in scores.groupby("scorer"):
        value = pd.Series(np.nan, index=rows.index, dtype=float)
        for metric in HEADLINE.get(scorer, DEFAULT_HEADLINE):
            if metric in rows:  # parts written before a metric's column existed lack it
                value = value.fillna(rows[metric].astype(float))
        out.loc[rows.index] = value
    return out


def _scorer_order(names) -> list[str]:
    known = [s for s in SCORERS if s in set(names)]
    return known + sorted(set(names) - set(known))


def score_table(store: RunStore, hookpoint: str | None = None, scores: pd.DataFrame | None = None
                ) -> pd.DataFrame:
    """One row per scored (hookpoint, latent), one column per scorer with its headline metric
    (NaN where that scorer failed or has not run). `scores`: store.current_scores already read."""
    # only scores of the explanation each latent shows
    if scores is None:  # pivoted in DuckDB: a million scored latents stay out of pandas' long format
        table = store.current_score_table(HEADLINE, DEFAULT_HEADLINE, hookpoint)
        return table if len(table) else pd.DataFrame(columns=KEYS)
    if scores.empty:
        return pd.DataFrame(columns=KEYS)
    scores = scores.assign(value=headline(scores))
    table = scores.set_index([*KEYS, "scorer"])["value"].unstack("scorer")  # keys are unique: latest wins
    table = table.reindex(columns=_scorer_order(scores.scorer.unique()))
    table.columns.name = None
    return table.reset_index().sort_values(KEYS, ignore_index=True)


def scorer_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in KEYS]


def scorer_correlations(table: pd.DataFrame, min_n: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Spearman rho, n) between every pair of scorers over the latents both scored. rho is NaN
    below min_n shared latents or when one side is constant (no ranking to correlate). Spearman's
    rho is Pearson's r of the average ranks; a scorer's ranks are computed once and reused for every
    pair whose shared latents are all its scored ones (a million latents: one sort per scorer)."""
    cols = scorer_columns(table)
    rho = pd.DataFrame(np.nan, index=cols, columns=cols, dtype=float)
    n = pd.DataFrame(0, index=cols, columns=cols, dtype=int)
    values = {c: table[c].astype(float).to_numpy() for c in cols}
    scored = {c: ~np.isnan(v) for c, v in values.items()}
    ranked = {c: stats.rankdata(v[scored[c]]) for c, v in values.items()}

    def ranks(c: str, both: np.ndarray) -> np.ndarray:
        return ranked[c] if np.array_equal(both, scored[c]) else stats.rankdata(values[c][both])

    for i, a in enumerate(cols):
        for b in cols[i:]:
            both = scored[a] & scored[b]
            n.loc[a, b] = n.loc[b, a] = int(both.sum())
            if both.sum() < min_n:
                continue
            ra, rb = ranks(a, both), ranks(b, both)
            if np.ptp(ra) == 0 or np.ptp(rb) == 0:
                continue  # a constant side ranks nothing
            rho.loc[a, b] = rho.loc[b, a] = float(np.corrcoef(ra, rb)[0, 1])
    return rho, n


def accuracy_per_decile(store: RunStore, hookpoint: str | None = None) -> pd.DataFrame:
    """Mean accuracy per scorer (rows) and activation decile (columns; 0 = non-activating,
    1..10 weakest to strongest), averaged over latents so each latent counts once."""
    long = store.current_decile_accuracy(hookpoint)  # averaged in DuckDB: one row per (scorer, decile)
    if long.empty:
        return pd.DataFrame(dtype=float)
    wide = long.pivot(index="scorer", columns="decile", values="accuracy")
    wide = wide.reindex(index=_scorer_order(wide.index), columns=sorted(wide.columns))
    wide.index.name, wide.columns.name = "scorer", "decile"
    return wide


def histogram_table(store: RunStore, hookpoint: str, latent: int) -> pd.DataFrame:
    """A latent's stored activation histogram as a table (bin_lo, bin_hi, count)."""
    edges, counts = store.histogram(hookpoint, latent)
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": counts.astype(int)})


# --- intervention (the paper's Fig. 4) -------------------------------------------------------------

# per target KL, which score of results/interventions each Fig. 4 (left) line shows
INTERVENTION_CONDITIONS = {"latent, true explanation": "score",
                           "latent, random explanation": "random_explanation_score",
                           "random direction, true explanation": "random_direction_score"}


def intervention_by_kl(store: RunStore, hookpoint: str | None = None) -> pd.DataFrame:
    """Mean intervention score with 95% CI per target KL, for the latent's direction with its true
    and a random explanation and for a random direction with the true explanation (Fig. 4 left):
    columns target_kl, condition, mean, ci_lo, ci_hi, n. Unreached targets have no score and drop out."""
    iv = store.interventions(hookpoint)
    rows = []
    for target, g in iv.groupby("target_kl"):
        for condition, column in INTERVENTION_CONDITIONS.items():
            values = g[column].dropna().astype(float).to_numpy()
            if len(values):
                rows.append({"target_kl": float(target), "condition": condition,
                             **dict(zip(("mean", "ci_lo", "ci_hi"), t_ci(values))), "n": len(values)})
    return pd.DataFrame(rows, columns=["target_kl", "condition", "mean", "ci_lo", "ci_hi", "n"])


def intervention_vs_fuzzing(table: pd.DataFrame) -> pd.DataFrame:
    """The latents with both an intervention and a fuzzing headline (Fig. 4 right), from score_table."""
    if not {"intervention", "fuzzing"} <= set(table.columns):
        return pd.DataFrame(columns=[*KEYS, "fuzzing", "intervention"])
    both = table[[*KEYS, "fuzzing", "intervention"]].dropna()
    return both.reset_index(drop=True)


def linear_fit(x, y) -> dict:
    """Least-squares line and Pearson r of y on x: {n, r, p, slope, intercept}; NaN below 3 points
    or when either side is constant (no line to fit)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = {"n": len(x), "r": np.nan, "p": np.nan, "slope": np.nan, "intercept": np.nan}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    fit = stats.linregress(x, y)
    return out | {"r": float(fit.rvalue), "p": float(fit.pvalue), "slope": float(fit.slope),
                  "intercept": float(fit.intercept)}
