"""Benchmarks that measure peak memory run each measurement in a child process of their own script
(`--child ...`), which prints one JSON line last."""

from __future__ import annotations

import json
import subprocess
import sys


def run_json_child(script: str, *args: str) -> dict:
    """Run `python script --child *args` and return the JSON object on its last stdout line."""
    out = subprocess.run([sys.executable, script, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
