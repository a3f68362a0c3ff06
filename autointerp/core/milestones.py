"""Milestones: what a run has reached, one JSON line each in the run's `milestones.jsonl`.

`make app` serves the app first and builds the demo behind it; the build's steps append lines such
as `{"time": ..., "event": "run browsable", "n_tokens": 65536, "complete": false}` so that a test
can check the order they came in and a benchmark can read when each was reached, without watching
the clock. Events: "run browsable" (the first publish), "run grown" (each later one; `complete`
once the whole run is in), "first score" (the first score row a score command writes on the run).
One write per line, opened for appending: concurrent writers do not mix their lines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

MILESTONES = "milestones.jsonl"


def read_milestones(run_dir: Path) -> list[dict]:
    """Every milestone of a run so far, oldest first (a torn last line is skipped)."""
    try:
        lines = (Path(run_dir) / MILESTONES).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def record_milestone(run_dir: Path, event: str, once: bool = False, **info) -> None:
    """Append one milestone; with `once`, only if the run has none of this event yet. Advisory: a
    failure to write is logged, never raised."""
    if once and any(m.get("event") == event for m in read_milestones(run_dir)):
        return
    line = json.dumps({"time": round(time.time(), 3), "event": event, **info}) + "\n"
    path = Path(run_dir) / MILESTONES
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as e:
        log.warning("could not record milestone %r in %s: %s", event, path, e)
