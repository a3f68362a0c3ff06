"""Surprisal scorer: does the explanation make the scorer LM less surprised by the text?
Per window: mean token loss after a prompt with the explanation, minus the loss after a prompt
with a generic explanation. A good explanation lowers loss on activating windows, not on silent
ones; AUROC of the loss reduction separates the two (threshold for accuracy: the median)."""

from __future__ import annotations

import numpy as np

from autointerp.score.metrics import median_split
from autointerp.explain.prompts import plain
from autointerp.score import ScoreContext, ScoreResult
from autointerp.store import Example

GENERIC_EXPLANATION = "various unrelated text"
PROMPT = "The following text was chosen because it contains {}:\n"


def score_surprisal(client, explanation: str, activating: list[Example], negatives: list[Example],
                    cache: dict | None = None) -> tuple[dict, list[dict]]:
    """`cache` keeps the generic prompt's losses, which do not depend on the explanation, for the
    next explanation scored on the same windows (validation scores three)."""
    items = [(e, True) for e in activating] + [(e, False) for e in negatives]
    texts = [plain(e) for e, _ in items]
    with_expl = client.token_losses([PROMPT.format(explanation)] * len(texts), texts)
    key = ("surprisal-generic", client.name, tuple(texts))
    generic = cache.get(key) if cache is not None else None
    if generic is None:
        generic = client.token_losses([PROMPT.format(GENERIC_EXPLANATION)] * len(texts), texts)
        if cache is not None:
            cache[key] = generic
    gain = np.array([np.mean(g) - np.mean(w) for g, w in zip(generic, with_expl)])
    return median_split(items, gain, at_median=False)


def run(ctx: ScoreContext) -> ScoreResult:
    return ScoreResult(*score_surprisal(ctx.client, ctx.explanation, ctx.activating, ctx.negatives, ctx.cache),
                       mode="loss")
