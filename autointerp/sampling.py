"""Which examples the explainer sees and which the scorers test on (seeded, reproducible).

Explanation examples: `top` (strongest windows), `random` (any activating windows), `quantiles`
(equal-count slices by max activation, default 10), or `mix` (half top, half quantiles).
Test sets: activating windows from every decile (disjoint from the explanation examples) plus
non-activating windows, either random or hard negatives: windows whose text is close in MiniLM
embedding space to the activating ones but where the latent is silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from autointerp.errors import AutointerpError
from autointerp.store import Example, RunStore

log = logging.getLogger(__name__)

STRATEGIES = ("top", "random", "quantiles", "mix")


@dataclass
class SamplingConfig:
    strategy: str = "top"
    n_explain: int = 20
    n_quantiles: int = 10
    test_per_quantile: int = 3
    n_negative: int = 30
    negatives: str = "random"  # random | hard
    seed: int = 0
    min_examples: int = 5


def _key(e: Example) -> tuple[int, int]:
    return e.doc_id, e.start


def explanation_examples(store: RunStore, hookpoint: str, latent: int, cfg: SamplingConfig) -> list[Example]:
    if cfg.strategy not in STRATEGIES:
        raise AutointerpError(f"unknown sampling strategy {cfg.strategy!r}: use one of {', '.join(STRATEGIES)}")
    n = cfg.n_explain
    if cfg.strategy == "top":
        out = store.top_examples(hookpoint, latent, n)
    elif cfg.strategy == "random":
        out = store.random_examples(hookpoint, latent, n, seed=cfg.seed)
    elif cfg.strategy == "quantiles":
        out = store.quantile_examples(hookpoint, latent, cfg.n_quantiles, -(-n // cfg.n_quantiles), seed=cfg.seed)[:n]
    else:
        top = store.top_examples(hookpoint, latent, n // 2)
        seen = {_key(e) for e in top}
        rest = [e for e in store.quantile_examples(hookpoint, latent, cfg.n_quantiles,
                                                   -(-n // cfg.n_quantiles) + 1, seed=cfg.seed)
                if _key(e) not in seen]
        out = top + rest[: n - len(top)]
    # Asking for fewer examples than min_examples is the caller's choice, not a rare latent.
    if len(out) < min(cfg.min_examples, n):
        raise TooFewExamples(f"latent {latent} of {hookpoint} has {len(out)} activating windows; "
                             f"at least {min(cfg.min_examples, n)} are needed to explain it")
    return out


class TooFewExamples(AutointerpError):
    """A latent fires too rarely to explain or score; recorded as a failure, not a crash."""


def scoring_examples(store: RunStore, hookpoint: str, latent: int, cfg: SamplingConfig,
                  exclude: list[Example] | None = None, embedder=None) -> tuple[list[Example], list[Example]]:
    """(activating, non_activating). Activating examples carry `quantile` 1..n_quantiles (10 =
    strongest); explanation examples are excluded so scoring never tests on what was explained."""
    skip = {_key(e) for e in exclude or []}
    pool = store.quantile_examples(hookpoint, latent, cfg.n_quantiles, cfg.test_per_quantile + 4, seed=cfg.seed + 1)
    activating: list[Example] = []
    per_q: dict[int, int] = {}
    for e in pool:
        if _key(e) in skip or per_q.get(e.quantile, 0) >= cfg.test_per_quantile:
            continue
        per_q[e.quantile] = per_q.get(e.quantile, 0) + 1
        activating.append(e)
    if len(activating) < cfg.min_examples:
        raise TooFewExamples(f"latent {latent} of {hookpoint} has {len(activating)} held-out activating windows; "
                             f"at least {cfg.min_examples} are needed to score it")
    if cfg.negatives == "random":
        negatives = store.non_activating_examples(hookpoint, latent, cfg.n_negative, seed=cfg.seed)
    elif cfg.negatives == "hard":
        negatives = hard_negatives(store, hookpoint, latent, activating, cfg, embedder)
    else:
        raise AutointerpError(f"unknown negatives {cfg.negatives!r}: use random or hard")
    return activating, negatives


def hard_negatives(store: RunStore, hookpoint: str, latent: int, activating: list[Example], cfg: SamplingConfig,
                   embedder=None) -> list[Example]:
    """Silent windows whose MiniLM embedding is closest to the mean of the activating ones."""
    from autointerp.embedding import load_embedder

    embedder = embedder or load_embedder()
    pool = store.non_activating_examples(hookpoint, latent, cfg.n_negative * 10, seed=cfg.seed)
    texts_a = ["".join(e.tokens) for e in activating]
    texts_p = ["".join(e.tokens) for e in pool]
    emb = embedder.encode(texts_a + texts_p, normalize_embeddings=True, batch_size=64)
    centre = emb[: len(texts_a)].mean(axis=0)
    sims = emb[len(texts_a):] @ centre
    order = np.argsort(-sims, kind="stable")[: cfg.n_negative]
    return [pool[i] for i in order]
