"""Classification metrics for scorer decisions. Failures (malformed LLM answers) are counted
next to every score and never folded into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import rankdata


@dataclass
class Decision:
    """One scored example: the truth, the scorer's call and (when it has one) its probability."""

    activating: bool
    prediction: bool | None  # None = the answer could not be parsed (a failure)
    probability: float | None = None
    quantile: int = 0  # activation decile of the example, 1..10; 0 = non-activating

    @property
    def failed(self) -> bool:
        return self.prediction is None


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum statistic (ties count half); None if one class."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


MIN_N = 3  # fewer values than this give no interval ("not enough data")


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


Z95 = 1.959963984540054  # two-sided 95 % normal quantile
# the 95 % interval bounds a scorer summary may carry (stored as score columns of the same names)
INTERVAL_KEYS = ("auroc_lo", "auroc_hi", "balanced_accuracy_lo", "balanced_accuracy_hi", "correlation_lo",
                 "correlation_hi", "accuracy_lo", "accuracy_hi")  # intervention_score_lo/hi are written by the intervention scorer


def auroc_ci(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    """95 % interval of one AUROC by DeLong's method (the variance of its structural components:
    for each activating example, the share of silent ones it outranks, ties half; and the
    reverse), clipped to [0, 1]. At perfect separation the variance is 0 and so is the width."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return None, None
    cmp = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = cmp.mean(axis=1), cmp.mean(axis=0)
    a = float(cmp.mean())
    se = float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))
    return max(0.0, a - Z95 * se), min(1.0, a + Z95 * se)


def balanced_accuracy_ci(tp: int, fn: int, tn: int, fp: int) -> tuple[float, float] | tuple[None, None]:
    """95 % interval of (recall + specificity) / 2 from the two binomial proportions, each
    adjusted by one success and one failure (Agresti-Caffo), so a perfect 20/20 still has width."""
    if tp + fn == 0 or tn + fp == 0:
        return None, None
    r, s = (tp + 1) / (tp + fn + 2), (tn + 1) / (tn + fp + 2)
    se = 0.5 * np.sqrt(r * (1 - r) / (tp + fn + 2) + s * (1 - s) / (tn + fp + 2))
    mid = ((tp / (tp + fn)) + (tn / (tn + fp))) / 2
    return float(max(0.0, mid - Z95 * se)), float(min(1.0, mid + Z95 * se))


def wilson_ci(successes: int, n: int) -> tuple[float, float] | tuple[None, None]:
    """95 % Wilson score interval of a proportion: keeps its coverage at small n and never leaves
    [0, 1] (20 prompts, all right, still gives [0.84, 1])."""
    if n <= 0:
        return None, None
    p, z2 = successes / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def summarize(decisions: list[Decision]) -> dict:
    """balanced accuracy, precision, recall, F1, AUROC (if probabilities), accuracy per decile,
    over the decisions that did not fail; n_failed counts the rest."""
    ok = [d for d in decisions if not d.failed]
    out: dict = {"n": len(ok), "n_failed": len(decisions) - len(ok)}
    if not ok:
        return {**out, "balanced_accuracy": None, "precision": None, "recall": None, "f1": None,
                "auroc": None, "accuracy": None, "accuracy_per_decile": {}, "auroc_lo": None, "auroc_hi": None,
                "balanced_accuracy_lo": None, "balanced_accuracy_hi": None}
    y = np.array([d.activating for d in ok])
    p = np.array([bool(d.prediction) for d in ok])
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    recall = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    precision = tp / (tp + fp) if tp + fp else None
    parts = [v for v in (recall, specificity) if v is not None]
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if recall is not None else None)
    probs = [d.probability for d in ok]
    has_probs = all(q is not None for q in probs)
    auroc_lo, auroc_hi = auroc_ci(y, np.array(probs, dtype=float)) if has_probs else (None, None)
    ba_lo, ba_hi = balanced_accuracy_ci(tp, fn, tn, fp)
    out.update(
        auroc_lo=auroc_lo, auroc_hi=auroc_hi, balanced_accuracy_lo=ba_lo, balanced_accuracy_hi=ba_hi,
        balanced_accuracy=float(np.mean(parts)),
        precision=precision, recall=recall, f1=f1,
        accuracy=float((y == p).mean()),
        auroc=auroc(y, np.array(probs, dtype=float)) if has_probs else None,
        accuracy_per_decile={
            int(q): float(np.mean([d.prediction == d.activating for d in ok if d.quantile == q]))
            for q in sorted({d.quantile for d in ok})
        },
        tp=tp, fp=fp, fn=fn, tn=tn,
    )
    return out


def median_split(items: list, values, at_median: bool) -> tuple[dict, list[dict]]:
    """Decisions of a scorer that ranks (example, activating) items by a value with no threshold of
    its own (embedding similarity, surprisal gain): "activating" above the median value (or at it,
    with at_median), so half the test set is called activating; their summary and decision records."""
    cut = float(np.median(values))
    decisions = [Decision(act, bool(v >= cut if at_median else v > cut), float(v), (e.quantile or 0) if act else 0)
                 for (e, act), v in zip(items, values)]
    records = [{"doc_id": e.doc_id, "start": e.start, "activating": act, "quantile": d.quantile,
                "prediction": d.prediction, "probability": d.probability, "failed": False, "raw": "", "shown": ""}
               for (e, act), d in zip(items, decisions)]
    return summarize(decisions), records
