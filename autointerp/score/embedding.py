"""Embedding scorer: the explanation as a query, windows as documents (MiniLM); AUROC of cosine
similarity between activating and silent windows. Predictions threshold at the median similarity,
so accuracy-type metrics are defined too; AUROC is the score that matters."""

from __future__ import annotations


from autointerp.models.embedder import embedder_engine, embedder_name, load_embedder
from autointerp.score.metrics import median_split
from autointerp.explain.prompts import plain
from autointerp.score import ScoreContext, ScoreResult
from autointerp.store import Example


def score_embedding(explanation: str, activating: list[Example], negatives: list[Example],
                    embedder=None) -> tuple[dict, list[dict]]:
    embedder = embedder or load_embedder()
    items = [(e, True) for e in activating] + [(e, False) for e in negatives]
    emb = embedder.encode([explanation] + [plain(e) for e, _ in items], normalize_embeddings=True, batch_size=64)
    sims = emb[1:] @ emb[0]
    return median_split(items, sims, at_median=True)


def run(ctx: ScoreContext) -> ScoreResult:
    summary, records = score_embedding(ctx.explanation, ctx.activating, ctx.negatives, ctx.embedder)
    return ScoreResult(summary, records, mode="similarity", model=embedder_name(ctx.cfg.embedder),
                       engine=embedder_engine(ctx.embedder))
