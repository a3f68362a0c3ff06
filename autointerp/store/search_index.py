"""The explanation search index: per latent set an HNSW graph (usearch) over the embeddings of its
latents' current explanations, kept in the run folder and grown as explanations land, so a search
over a million explanations reads a memory-mapped graph instead of embedding them at app start.

  search/<set>/index.usearch     the graph; key = latent, vector = the explanation's embedding
  search/<set>/embedded.parquet  per latent the md5 of the text embedded and the embedder's name

The embeddings are computed above the store (explain.search_index); here live the files, the
SQL that finds what is not yet embedded, and the nearest-neighbour queries. A writer holds the
set's lock, writes the graph, then the record, each under a temporary name renamed into place: a
reader sees whole files, and a record never names a text the graph lacks (a crash between the two
renames only makes the next update embed a few texts again).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from autointerp.core.atomic import remove_stale_temp, tmp_prefix
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point
from autointerp.store.files import write_parquet_atomic

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
INDEX_FILE = "index.usearch"
RECORD_FILE = "embedded.parquet"
# HNSW settings, measured on 131,072 MiniLM-like vectors per set (docs/benchmarks.md): 16 links per
# node (usearch's default) and a search beam of 512 keep recall@10 >= 0.95 at a few ms per set.
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 512
VECTOR_DTYPE = "f16"  # half the memory of f32; the recall measured with it
RECORD_SCHEMA = pa.schema([("latent", pa.int64()), ("text_md5", pa.string()), ("embedder", pa.string())])


def index_dir(run_dir: Path, hookpoint: str) -> Path:
    return Path(run_dir) / SEARCH_DIR / hookpoint


def record_path(run_dir: Path, hookpoint: str) -> Path:
    return index_dir(run_dir, hookpoint) / RECORD_FILE


class _SetLock:
    """One writer per set's index at a time (an explain job and the app catching up)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"

    def __enter__(self):
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _restore(path: Path, view: bool):
    """A saved graph (memory-mapped with `view`); a file usearch cannot read is a one-line error."""
    from usearch.index import Index

    try:
        graph = Index.restore(str(path), view=view)
    except ValueError as e:
        graph, why = None, str(e)
    else:
        why = "not a usearch index"
    if graph is None:
        raise AutointerpError(f"search index {path} is unreadable ({why}): delete {path.parent} and search "
                              f"again to rebuild it")
    return graph


def add_to_index(run_dir: Path, hookpoint: str, latents: np.ndarray, text_md5: list[str], vectors: np.ndarray,
                 embedder: str) -> int:
    """Put these latents' embeddings into the set's graph (a latent already there is replaced:
    its explanation changed) and record which text each came from; returns the graph's size.
    A graph built by another embedder is dropped first (its vectors are not comparable)."""
    from usearch.index import Index

    latents = np.asarray(latents, dtype=np.uint64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(latents) != len(vectors) or len(latents) != len(text_md5):
        raise ValueError(f"{len(latents)} latents, {len(text_md5)} texts and {len(vectors)} vectors")
    folder = index_dir(run_dir, hookpoint)
    with _SetLock(folder):
        remove_stale_temp(folder)  # a graph or record a killed writer left half-saved
        graph_path, record_file = folder / INDEX_FILE, folder / RECORD_FILE
        record = pd.read_parquet(record_file) if record_file.exists() else None
        same = record is not None and graph_path.exists() and (record.embedder == embedder).all()
        try:
            graph = _restore(graph_path, view=False) if same else None
        except AutointerpError as e:  # rebuilt from what is added now; the app's catch-up embeds the rest
            log.warning("%s; starting it afresh", e)
            graph = None
        if graph is not None and graph.ndim != vectors.shape[1]:
            raise AutointerpError(f"search index of {hookpoint} holds {graph.ndim}-dim vectors, got "
                                  f"{vectors.shape[1]}: delete {folder} to rebuild it")
        if graph is None:
            graph = Index(ndim=vectors.shape[1], metric="cos", dtype=VECTOR_DTYPE, connectivity=CONNECTIVITY,
                          expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
            record = None
        if len(latents):
            present = latents[graph.contains(latents)] if len(graph) else latents[:0]
            if len(present):
                graph.remove(present)
            graph.add(latents, vectors, threads=os.cpu_count() or 1)
        tmp = folder / f"{tmp_prefix()}{INDEX_FILE}"
        try:
            graph.save(str(tmp))
            fault_point("search-index-saved")
            os.replace(tmp, graph_path)
        finally:
            tmp.unlink(missing_ok=True)
        new = pd.DataFrame({"latent": latents.astype(np.int64), "text_md5": list(text_md5), "embedder": embedder})
        if record is not None:
            new = pd.concat([record[~record.latent.isin(new.latent)], new], ignore_index=True)
        write_parquet_atomic(pa.Table.from_pandas(new.sort_values("latent"), schema=RECORD_SCHEMA,
                                                  preserve_index=False), record_file)
        return len(graph)


class SearchIndexes:
    """Read side: each set's graph memory-mapped once, re-opened when a writer replaced it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._open: dict[str, tuple[int, object]] = {}
        self._lock = threading.Lock()

    def _graph(self, hookpoint: str):
        path = index_dir(self.run_dir, hookpoint) / INDEX_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with self._lock:
            held = self._open.get(hookpoint)
            if held is None or held[0] != stamp:
                graph = _restore(path, view=True)
                graph.expansion_search = EXPANSION_SEARCH
                self._open[hookpoint] = held = (stamp, graph)
            return held[1]

    def size(self, hookpoint: str) -> int:
        graph = self._graph(hookpoint)
        return 0 if graph is None else len(graph)

    def search(self, vector: np.ndarray, hookpoints: list[str], k: int, exact: bool = False) -> pd.DataFrame:
        """The k latents across these sets whose indexed explanation is closest to `vector`
        (cosine similarity), closest first; `exact` scans every vector (the reference for recall)."""
        parts = []
        for hp in hookpoints:
            graph = self._graph(hp)
            if graph is None or not len(graph):
                continue
            found = graph.search(np.asarray(vector, dtype=np.float32), min(k, len(graph)), exact=exact)
            parts.append(pd.DataFrame({"hookpoint": hp, "latent": found.keys.astype(np.int64),
                                       "similarity": 1.0 - found.distances.astype(np.float64)}))
        if not parts:
            return pd.DataFrame({"hookpoint": pd.Series(dtype=object), "latent": pd.Series(dtype="int64"),
                                 "similarity": pd.Series(dtype=float)})
        out = pd.concat(parts, ignore_index=True)
        return out.sort_values(["similarity", "hookpoint", "latent"], ascending=[False, True, True],
                               kind="stable").head(k).reset_index(drop=True)
