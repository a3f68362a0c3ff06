"""Keeping each latent set's explanation search index up to date: embed (MiniLM) the current
explanations it does not hold yet and add them. The explain runner calls this after each part it
writes, so the index grows as explanations land; the app calls it before a search to catch up
with explanations written before the index existed (then it embeds only what is missing)."""

from __future__ import annotations

import logging

from autointerp.models.embedder import DEFAULT_EMBEDDER, embedder_name, load_embedder
from autointerp.store import RunStore
from autointerp.store.search_index import add_to_index

log = logging.getLogger(__name__)

INDEX_EMBEDDER = DEFAULT_EMBEDDER  # the search's embedder: queries are embedded with the same one
ADD_BATCH = 16_384  # explanations embedded per graph update (one save of the set's graph each)


def index_explanations(store: RunStore, hookpoint: str, embedder=None) -> int:
    """Embed and index the set's current explanations missing from its search index; returns how
    many were added (0: up to date, and no embedder was loaded). A second pass picks up what a graph
    rebuilt from scratch (another embedder, an unreadable file) no longer holds."""
    name = embedder_name(INDEX_EMBEDDER)
    added = 0
    for _ in range(2):
        todo = store.unindexed_explanations(hookpoint, name)
        if not len(todo):
            break
        embedder = embedder or load_embedder(INDEX_EMBEDDER)
        for start in range(0, len(todo), ADD_BATCH):
            chunk = todo.iloc[start:start + ADD_BATCH]
            vectors = embedder.encode(chunk.explanation.tolist(), normalize_embeddings=True, batch_size=64,
                                      show_progress_bar=False)  # once per explain part: no bar in the job's log
            add_to_index(store.run_dir, hookpoint, chunk.latent.to_numpy(), chunk.text_md5.tolist(), vectors, name)
        added += len(todo)
    log.debug("search index of %s: %d explanations added", hookpoint, added)
    return added
