"""Which examples the explainer sees and which the scorers test on (seeded, reproducible).

Explanation examples: `top` (strongest windows), `random` (any activating windows), `quantiles`
(equal-count slices by max activation, default 10), or `mix` (half top, half quantiles).
Test sets: activating windows from every decile (disjoint from the explanation examples) plus
non-activating windows: random, hard (windows whose text is close in embedding space to the
activating ones) or neighbours (the top windows of the latents with the nearest decoder directions),
always windows where the latent is silent. Non-activating windows are
seeded per latent (store.latent_seed), so latents are not all tested on the same silent windows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autointerp.config import InterpretConfig, default_of
from autointerp.core.errors import AutointerpError
from autointerp.store import Example, RunStore

log = logging.getLogger(__name__)

STRATEGIES = ("top", "random", "quantiles", "mix")
NEGATIVES = ("random", "hard", "neighbours")


@dataclass
class SamplingConfig:
    # the defaults are InterpretConfig's (the CLI's): one default per setting
    strategy: str = default_of(InterpretConfig, "strategy")
    n_explain: int = default_of(InterpretConfig, "n_explain")
    n_quantiles: int = 10
    test_per_quantile: int = default_of(InterpretConfig, "test_per_quantile")
    n_negative: int = default_of(InterpretConfig, "n_negative")
    negatives: str = default_of(InterpretConfig, "negatives")  # random | hard | neighbours (NEGATIVES)
    seed: int = default_of(InterpretConfig, "seed")
    min_examples: int = default_of(InterpretConfig, "min_examples")


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
    if cfg.negatives not in NEGATIVES:
        raise AutointerpError(f"unknown negatives {cfg.negatives!r}: use {', '.join(NEGATIVES)}")

    def silent(n: int) -> list[Example]:
        c = dataclasses.replace(cfg, n_negative=n)
        if cfg.negatives == "random":
            return store.non_activating_examples(hookpoint, latent, n, seed=cfg.seed)
        if cfg.negatives == "hard":
            return hard_negatives(store, hookpoint, latent, activating, c, embedder)
        return neighbour_negatives(store, hookpoint, latent, c)

    negatives = silent(cfg.n_negative)
    # Silent windows an explainer saw (a contrastive prompt's counter-examples) are not tested on;
    # only then are more drawn, so test sets of every other explanation stay as they were.
    seen = set(skip)
    if seen and any(_key(e) in seen for e in negatives):
        negatives = [e for e in silent(cfg.n_negative + len(seen)) if _key(e) not in seen][:cfg.n_negative]
    if len(negatives) < min(cfg.n_negative, cfg.min_examples):
        need = min(cfg.n_negative, cfg.min_examples)
        if cfg.negatives == "neighbours":
            raise TooFewExamples(f"latent {latent} of {hookpoint} is silent in only {len(negatives)} of its "
                                 f"{NEIGHBOURS} nearest latents' top windows; at least {need} are needed to score it "
                                 f"(it fires wherever its neighbours do: use --negatives random or hard for it)")
        raise TooFewExamples(f"latent {latent} of {hookpoint} is silent in only {len(negatives)} windows; at least "
                             f"{need} non-activating windows are needed to score it "
                             f"(a dense unit: cache it with a threshold, e.g. neurons:0.4@HOOKPOINT)")
    return activating, negatives


# Neighbour negatives (delphi's "neighbours"): the top windows of the latents whose decoder
# directions are nearest the latent's (cosine), where the latent itself is silent. They share the
# latent's neighbourhood of meaning, so an explanation that is merely topical fails on them.
NEIGHBOURS = 10  # nearest latents drawn from
NEIGHBOUR_WINDOWS = 10  # top windows looked at per neighbour
NO_DECODER_KINDS = ("neurons", "topk")  # the unit basis: every pair of latents has cosine 0


@functools.lru_cache(maxsize=4)
def _unit_decoder(run_dir: str, hookpoint: str, coders_json: str) -> np.ndarray:
    from autointerp.models.coders import coder_from_manifest

    info = {"name": Path(run_dir).name, "coders": json.loads(coders_json)}
    d = coder_from_manifest(info, hookpoint).decoder_directions().float().numpy()
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def nearest_latents(store: RunStore, hookpoint: str, latent: int, n: int = NEIGHBOURS) -> list[int]:
    """The n latents of the set whose decoder directions have the largest cosine with the latent's."""
    entry = store.info.get("coders", {}).get(hookpoint, {})
    if entry.get("kind") in NO_DECODER_KINDS:
        raise AutointerpError(f"--negatives neighbours needs decoder directions, but latent set {hookpoint} is "
                              f"{entry.get('kind')} units (no decoder: all are orthogonal): use --negatives random "
                              f"or hard")
    dirs = _unit_decoder(str(store.run_dir), hookpoint, json.dumps(store.info.get("coders", {}), sort_keys=True))
    sims = dirs @ dirs[int(latent)]
    sims[int(latent)] = -np.inf
    return [int(i) for i in np.argsort(-sims, kind="stable")[:n]]


def neighbour_negatives(store: RunStore, hookpoint: str, latent: int, cfg: SamplingConfig) -> list[Example]:
    """Up to n_negative windows where the latent is silent, from its nearest latents' top windows,
    taken round-robin by rank (each neighbour's strongest first) so many neighbours contribute."""
    active = store.active_windows(hookpoint, latent)
    taken = set(zip(active.doc_id.tolist(), active.w.tolist()))
    tops = [store.top_examples(hookpoint, nb, NEIGHBOUR_WINDOWS) for nb in nearest_latents(store, hookpoint, latent)]
    chosen: list[Example] = []
    for rank in range(NEIGHBOUR_WINDOWS):
        for top in tops:
            if rank < len(top) and len(chosen) < cfg.n_negative:
                key = (top[rank].doc_id, (top[rank].start - 1) // store.window)
                if key not in taken:
                    taken.add(key)
                    chosen.append(store.window_example(*key))  # the latent's own activations: all zero
    return chosen


def hard_negatives(store: RunStore, hookpoint: str, latent: int, activating: list[Example], cfg: SamplingConfig,
                   embedder=None) -> list[Example]:
    """Silent windows whose MiniLM embedding is closest to the mean of the activating ones, from a
    pool the store seeds per latent."""
    from autointerp.models.embedder import load_embedder

    embedder = embedder or load_embedder()
    pool = store.non_activating_examples(hookpoint, latent, cfg.n_negative * 10, seed=cfg.seed)
    texts_a = ["".join(e.tokens) for e in activating]
    texts_p = ["".join(e.tokens) for e in pool]
    emb = embedder.encode(texts_a + texts_p, normalize_embeddings=True, batch_size=64)
    centre = emb[: len(texts_a)].mean(axis=0)
    sims = emb[len(texts_a):] @ centre
    order = np.argsort(-sims, kind="stable")[: cfg.n_negative]
    return [pool[i] for i in order]
