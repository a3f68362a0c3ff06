"""Where runs live and which runs exist."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from autointerp.core.paths import data_dir

log = logging.getLogger(__name__)

def run_path(run: str) -> Path:
    """A bare run name lives under data/runs/; anything with a slash is a path."""
    return Path(run) if ("/" in run or run.startswith(".")) else data_dir() / "runs" / run


def list_runs(root: Path | None = None) -> list[dict]:
    root = root or data_dir() / "runs"
    out = []
    for manifest in sorted(root.glob("*/run.json")):
        try:
            info = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            log.warning("skipping %s: run.json is not valid JSON", manifest.parent)
            continue
        info["path"] = str(manifest.parent)
        # a run is known by its folder (what --run and run_path take): a folder copied under another
        # name keeps the old name in its run.json, and jobs launched by that name went to the old folder
        if info.get("name") != manifest.parent.name:
            info["manifest_name"] = info.get("name")
        info["name"] = manifest.parent.name
        out.append(info)
    return out
