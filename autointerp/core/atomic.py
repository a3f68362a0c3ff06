"""Atomic file writes: a reader sees the old file or the new one, never a half-written one; the
temporary file carries the writer's pid so that a killed writer's leftovers can be told apart."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import psutil

from autointerp.core.faults import fault_point

log = logging.getLogger(__name__)


def tmp_prefix() -> str:
    # The writer's pid in the name lets remove_stale_temp tell a killed writer's leftovers from a
    # live writer's file in flight.
    return f".tmp-{os.getpid()}-"


def remove_stale_temp(folder: Path) -> int:
    """Delete temporary files in `folder` left by writers that no longer run (a kill -9 mid-write)."""
    removed = 0
    for tmp in folder.glob(".tmp-*") if folder.is_dir() else []:
        pid = tmp.name.split("-")[1]
        if tmp.is_file() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporary files left by killed writers in %s", removed, folder)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point("mid-write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj, durable: bool = True) -> None:
    """JSON written atomically. durable=False is for advisory files rewritten often (a job's
    progress and metadata): no fsync, and no "mid-write" fault point, whose count a fault
    injection in the pipeline's own writes relies on."""
    if durable:
        atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())
        return
    tmp = path.with_name(f"{tmp_prefix()}{path.name}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
