"""Classification metrics for scorer decisions. Failures (malformed LLM answers) are counted
next to every score and never folded into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def summarize(decisions: list[Decision]) -> dict:
    """balanced accuracy, precision, recall, F1, AUROC (if probabilities), accuracy per decile,
    over the decisions that did not fail; n_failed counts the rest."""
    ok = [d for d in decisions if not d.failed]
    out: dict = {"n": len(ok), "n_failed": len(decisions) - len(ok)}
    if not ok:
        return {**out, "balanced_accuracy": None, "precision": None, "recall": None, "f1": None,
                "auroc": None, "accuracy": None, "accuracy_per_decile": {}}
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
    out.update(
        balanced_accuracy=float(np.mean(parts)),
        precision=precision, recall=recall, f1=f1,
        accuracy=float((y == p).mean()),
        auroc=auroc(y, np.array(probs, dtype=float)) if all(q is not None for q in probs) else None,
        accuracy_per_decile={
            int(q): float(np.mean([d.prediction == d.activating for d in ok if d.quantile == q]))
            for q in sorted({d.quantile for d in ok})
        },
        tp=tp, fp=fp, fn=fn, tn=tn,
    )
    return out
