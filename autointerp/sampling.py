"""Which examples the explainer sees and which the scorers test on (seeded, reproducible).

Explanation examples: `top` (strongest windows), `random` (any activating windows), `quantiles`
(equal-count slices by max activation, default 10), or `mix` (half top, half quantiles).
Test sets: activating windows from every decile (disjoint from the explanation examples) plus
non-activating windows, either random or hard negatives: windows whose text is close in MiniLM
embedding space to the activating ones but where the latent is silent. Non-activating windows are
seeded per latent (store.latent_seed), so latents are not all tested on the same silent windows.
"""

from __future__ import annotations

import json
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


def _key(e: Example | tuple[int, int]) -> tuple[int, int]:
    return (int(e[0]), int(e[1])) if isinstance(e, tuple | list) else (e.doc_id, e.start)


def shown_windows(store: RunStore, hookpoint: str, latent: int, explanation: str) -> list[tuple[int, int]] | None:
    """The (doc_id, start) windows the explainer saw, as stored with the explanation: its newest
    record with this text, else (a random-explanation baseline, a hand-written one) the latent's
    newest record that has them, so both are tested on the same windows. None when only records
    from before windows were stored exist: the caller recomputes them."""
    df = store.latent_results("explanations", hookpoint, latent)  # newest first
    if "shown" not in df.columns:
        return None
    df = df[df.shown.notna()]
    same = df[df.explanation == explanation]
    rows = same if len(same) else df
    return [_key(k) for k in json.loads(rows.shown.iloc[0])] if len(rows) else None


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
                     exclude: list[Example] | list[tuple[int, int]] | None = None,
                     embedder=None) -> tuple[list[Example], list[Example]]:
    """(activating, non_activating). Activating examples carry `quantile` 1..n_quantiles (10 =
    strongest); explanation examples (or (doc_id, start) keys) are excluded so scoring never tests
    on what was explained. They are left out before sampling: with `top` explanations the strongest
    deciles would otherwise lose most of their test windows."""
    skip = sorted({_key(e) for e in exclude or []})
    activating = store.quantile_examples(hookpoint, latent, cfg.n_quantiles, cfg.test_per_quantile,
                                         seed=cfg.seed + 1, exclude=skip)
    if len(activating) < cfg.min_examples:
        raise TooFewExamples(f"latent {latent} of {hookpoint} has {len(activating)} held-out activating windows; "
                             f"at least {cfg.min_examples} are needed to score it")
    if cfg.negatives == "random":
        negatives = store.non_activating_examples(hookpoint, latent, cfg.n_negative, seed=cfg.seed)
    elif cfg.negatives == "hard":
        negatives = hard_negatives(store, hookpoint, latent, activating, cfg, embedder)
    else:
        raise AutointerpError(f"unknown negatives {cfg.negatives!r}: use random or hard")
    if len(negatives) < min(cfg.n_negative, cfg.min_examples):
        raise TooFewExamples(f"latent {latent} of {hookpoint} is silent in only {len(negatives)} windows; at least "
                             f"{min(cfg.n_negative, cfg.min_examples)} non-activating windows are needed to score it "
                             f"(a dense unit: cache it with a threshold, e.g. neurons:0.4@HOOKPOINT)")
    return activating, negatives


def hard_negatives(store: RunStore, hookpoint: str, latent: int, activating: list[Example], cfg: SamplingConfig,
                   embedder=None) -> list[Example]:
    """Silent windows whose MiniLM embedding is closest to the mean of the activating ones, from a
    pool the store seeds per latent."""
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
