"""Semantic search over explanations with MiniLM: the researcher types what a latent should be
about and gets the latents whose explanations mean that, not just contain the words. The query is
embedded and looked up in each set's nearest-neighbour index (store.search_index), which explain
jobs grow as explanations land; a set whose index lags its explanations is caught up first."""

from __future__ import annotations

import threading

import pandas as pd

from autointerp.explain.search_index import INDEX_EMBEDDER, index_explanations
from autointerp.store import RunStore
from autointerp.store.search_index import SearchIndexes


class ExplanationSearch:
    """Search one run's explanations, one set or many at once; build once per run and keep."""

    def __init__(self, store: RunStore, embedder=None):
        from autointerp.models.embedder import load_embedder

        self.store = store
        self.embedder = embedder or load_embedder(INDEX_EMBEDDER)
        self.indexes = SearchIndexes(store.run_dir)
        self._checked: dict[str, float] = {}  # set -> the explanations' version its index was caught up to
        self._lock = threading.Lock()

    def catch_up(self, hookpoints: list[str]) -> int:
        """Index what the sets' indexes lack (nothing when no explanation landed since the last
        check); returns how many explanations were embedded."""
        version = self.store.results_version("explanations")
        added = 0
        with self._lock:
            for hp in hookpoints:
                if self._checked.get(hp) != version:
                    added += index_explanations(self.store, hp, self.embedder)
                    self._checked[hp] = version
        return added

    def search(self, query: str, hookpoints: list[str], k: int = 50, exact: bool = False) -> pd.DataFrame:
        """(hookpoint, latent, similarity, explanation) of the k explanations closest to the query
        across these sets, closest first; `exact` compares with every vector (no index shortcut)."""
        if not query.strip():
            return pd.DataFrame({"hookpoint": [], "latent": [], "similarity": [], "explanation": []})
        self.catch_up(hookpoints)
        vector = self.embedder.encode([query], normalize_embeddings=True)[0]
        hits = self.indexes.search(vector, hookpoints, k, exact=exact)
        if hits.empty:
            return hits.assign(explanation=pd.Series(dtype=object))
        # one query for every set's hits: these latent ids in any set, the merge keeps the hits' pairs
        one_set = hits.hookpoint.iloc[0] if hits.hookpoint.nunique() == 1 else None
        texts = self.store.current_explanations(one_set, columns=["explanation"],
                                                latents=sorted(set(hits.latent.tolist())))
        return hits.merge(texts[["hookpoint", "latent", "explanation"]], on=["hookpoint", "latent"], how="left")
