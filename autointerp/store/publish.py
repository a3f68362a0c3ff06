"""The cache's finaliser: a set's sorted acts.parquet and its latents.parquet, out of core in DuckDB."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from autointerp.core.atomic import tmp_prefix
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point
from autointerp.store.files import (
    CONTEXTS_KEY,
    ROW_GROUP_ROWS,
    connect,
    covered_contexts,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

def publish_latent_set(run_dir: Path, name: str, n_latents: int, n_contexts: int, ctx_len: int,
                       spans: dict[int, tuple[int, int]], bins: int = 20, memory_limit: str = "2GB") -> None:
    """Make a set's sorted acts.parquet and latents.parquet cover contexts [0, n_contexts): the rows
    it already has plus those of its parts (spans: part -> its contexts [lo, hi)) up to there, sorted
    by (latent, value desc) in one out-of-core DuckDB sort, so peak RAM does not grow with the run.
    Idempotent: each file records the contexts it covers. Parts merged are removed."""
    set_dir = run_dir / "acts" / name
    acts = set_dir / "acts.parquet"
    have = covered_contexts(acts)
    if have is None and acts.exists():  # a set finalised before files recorded their coverage
        have = int(json.loads((run_dir / "run.json").read_text())["n_contexts"])
    have = have or 0
    if have > n_contexts:
        raise AutointerpError(f"{acts} covers {have} contexts, more than the {n_contexts} being published: delete "
                              f"the run folder and cache it again")
    parts_dir = set_dir / "parts"
    if have < n_contexts:
        needed = [p for p, (lo, hi) in spans.items() if lo < n_contexts and hi > have]
        missing = [p for p in needed if not (parts_dir / f"part-{p:05d}.parquet").exists()]
        if missing:
            raise AutointerpError(f"{parts_dir} lacks parts {missing[:5]} of contexts it must publish: delete the "
                                  f"progress/part-*.done markers of those parts and run the cache again")
        files = [str(parts_dir / f"part-{p:05d}.parquet") for p in needed]
        old = (f"SELECT latent, doc_id, pos, value FROM read_parquet('{acts}') WHERE doc_id < {have} UNION ALL "
               if have else "")
        con = connect(memory_limit, temp_dir=run_dir / ".duckdb-tmp")
        try:
            tmp = set_dir / f"{tmp_prefix()}acts.parquet"
            con.execute(
                f"COPY ({old}SELECT latent, doc_id, pos, value FROM read_parquet({files}) "
                f"WHERE doc_id >= {have} AND doc_id < {n_contexts} "
                f"ORDER BY latent, value DESC, doc_id, pos) TO '{tmp}' "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
                f"KV_METADATA {{{CONTEXTS_KEY}: '{n_contexts}'}})")
            fault_point("mid-write")
            os.replace(tmp, acts)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            con.close()
    if covered_contexts(set_dir / "latents.parquet") != n_contexts:
        write_latent_stats(set_dir, n_latents, n_contexts * ctx_len, bins, memory_limit, n_contexts)
    for p, (lo, hi) in spans.items():  # merged: no longer needed
        if hi <= n_contexts:
            (parts_dir / f"part-{p:05d}.parquet").unlink(missing_ok=True)


def write_latent_stats(set_dir: Path, n_latents: int, n_tokens: int, bins: int = 20,
                       memory_limit: str = "2GB", n_contexts: int | None = None) -> None:
    """latents.parquet from a sorted acts.parquet: one row per latent id (silent ones included)
    with count, frequency, max/min/mean and a histogram of its activations."""
    acts = str(set_dir / "acts.parquet")
    con = connect(memory_limit, temp_dir=set_dir.parent.parent / ".duckdb-tmp")
    try:
        stats = con.execute(f"""
            WITH s AS (SELECT latent, count(*) AS count, max(value) AS max_act, min(value) AS min_act,
                              avg(value) AS mean_act FROM read_parquet('{acts}') GROUP BY latent)
            SELECT l.latent::INTEGER AS latent, coalesce(s.count, 0)::BIGINT AS count,
                   coalesce(s.count, 0) / {n_tokens}::DOUBLE AS frequency,
                   coalesce(s.max_act, 0)::FLOAT AS max_act, coalesce(s.min_act, 0)::FLOAT AS min_act,
                   coalesce(s.mean_act, 0)::FLOAT AS mean_act
            FROM range({n_latents}) l(latent) LEFT JOIN s USING (latent) ORDER BY latent""").df()
        hist = con.execute(f"""
            WITH s AS (SELECT latent, min(least(value, 0)) AS lo, max(value) AS hi
                       FROM read_parquet('{acts}') GROUP BY latent)
            SELECT a.latent, least(floor((a.value - s.lo) / nullif(s.hi - s.lo, 0) * {bins}), {bins - 1})::INTEGER
                   AS bin, count(*) AS n
            FROM read_parquet('{acts}') a JOIN s USING (latent) GROUP BY ALL""").df()
    finally:
        con.close()
    counts = np.zeros((n_latents, bins), dtype=np.int64)
    if len(hist):
        b = hist["bin"].fillna(0).astype(int).to_numpy()
        counts[hist["latent"].to_numpy(), b] = hist["n"].to_numpy()
    stats["hist_lo"] = np.minimum(stats["min_act"].to_numpy(), 0).astype(np.float32)
    stats["hist_hi"] = stats["max_act"].astype(np.float32)
    stats["histogram"] = list(counts)
    table = pa.Table.from_pandas(stats, preserve_index=False)
    if n_contexts is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CONTEXTS_KEY: str(n_contexts)})
    write_parquet_atomic(table, set_dir / "latents.parquet")
