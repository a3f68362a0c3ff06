"""The embedded sentence embedder (all-MiniLM-L6-v2, shipped in a PyPI package, loads offline)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def load_embedder():
    from sentence_transformers import SentenceTransformer

    from autointerp.paths import minilm_dir

    return SentenceTransformer(str(minilm_dir()), device="cpu")
