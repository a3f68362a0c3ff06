"""Writing the run's Parquet files atomically, the DuckDB connections that read them, and what a file covers."""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
import weakref
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from autointerp.core.atomic import tmp_prefix
from autointerp.core.faults import fault_point

log = logging.getLogger(__name__)

ACT_SCHEMA = pa.schema([("latent", pa.int32()), ("doc_id", pa.int32()), ("pos", pa.int16()),
                        ("value", pa.float32())])
TOKENS_NPY = "tokens.npy"
ROW_GROUP_ROWS = 100_000  # small row groups: a latent's rows span few groups, zone maps skip the rest


def write_parquet_atomic(table: pa.Table, path: Path, row_group_size: int = ROW_GROUP_ROWS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(), suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        fault_point("mid-write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_OPEN_CONNECTIONS: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _close_connections() -> None:
    """Close long-lived connections before interpreter shutdown (else DuckDB's bindings print
    reference-leak warnings at exit)."""
    for con in list(_OPEN_CONNECTIONS):
        con.close()


def connect(memory_limit: str = "2GB", temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": 2})
    _OPEN_CONNECTIONS.add(con)
    con.execute("SET parquet_metadata_cache = true")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    return con


CONTEXTS_KEY = "autointerp_contexts"  # Parquet metadata of acts/latents files: the contexts they cover


def covered_contexts(path: Path) -> int | None:
    """The contexts a set's acts.parquet or latents.parquet covers (None: no file, or one written
    before files recorded it)."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        return None
    value = meta.get(CONTEXTS_KEY.encode())
    return int(value) if value is not None else None
