"""Semantic search over explanations with MiniLM: the researcher types what a latent should be
about and gets the latents whose explanations mean that, not just contain the words."""

from __future__ import annotations

import numpy as np
import pandas as pd


class ExplanationIndex:
    """MiniLM embeddings of a set's explanations; build once per set of explanations."""

    def __init__(self, explanations: pd.DataFrame, embedder=None):
        from autointerp.models.embedder import load_embedder

        ok = explanations[explanations.explanation.notna()]
        self.latents = ok.latent.to_numpy()
        self.texts = ok.explanation.tolist()
        self.embedder = embedder or load_embedder()
        self.vectors = (self.embedder.encode(self.texts, normalize_embeddings=True, batch_size=64)
                        if self.texts else np.zeros((0, 384), dtype=np.float32))

    def search(self, query: str, k: int = 50) -> pd.DataFrame:
        """The k latents whose explanation is closest to the query (cosine similarity)."""
        if not query.strip() or not len(self.latents):
            return pd.DataFrame({"latent": [], "similarity": [], "explanation": []})
        q = self.embedder.encode([query], normalize_embeddings=True)[0]
        sims = self.vectors @ q
        order = np.argsort(-sims, kind="stable")[:k]
        return pd.DataFrame({"latent": self.latents[order], "similarity": sims[order],
                             "explanation": [self.texts[i] for i in order]})
