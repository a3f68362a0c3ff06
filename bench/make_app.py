"""Time `make app`'s milestones on this machine: server up, first browsable run, run grown to the
full demo, first scored latent, measured from the moment `make app` starts.

    python bench/make_app.py --data /tmp/bench-data --limit-s 3600 -- -o browser -o models VENV=.venv

Everything after `--` goes to make (skip prerequisites already done, choose the venv, PORT=...,
DEMO_FLAGS=...). The data folder should hold `models/` (what `make models` prepared) and may link
`saes/` to the repository's. Server-up is polled here (/_stcore/health); the rest is read from the
run's milestones.jsonl (autointerp/core/milestones.py). At the end (all milestones or --limit-s) make
and the demo's jobs are stopped unless --keep; the load average is printed with every line, since
other work on the machine changes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autointerp import jobs  # noqa: E402
from autointerp.core.milestones import read_milestones  # noqa: E402


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="AUTOINTERP_DATA for the run")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--run", default="demo")
    ap.add_argument("--limit-s", type=float, default=3600.0)
    ap.add_argument("--keep", action="store_true", help="leave the app and the jobs running at the end")
    ap.add_argument("make_args", nargs="*")
    args = ap.parse_args()
    data = Path(args.data)
    env = {**os.environ, "AUTOINTERP_DATA": str(data), "HF_HUB_OFFLINE": "1"}
    log = open(data / "make-app.log", "ab")
    t0 = time.time()
    proc = subprocess.Popen(["make", "app", f"PORT={args.port}", *args.make_args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[str, float] = {}

    def note(name: str, when: float, extra: str = "") -> None:
        seen[name] = when
        print(f"{when - t0:8.1f} s  {name}{extra}  (load average {os.getloadavg()[0]:.1f})", flush=True)

    run = data / "runs" / args.run
    done = False
    try:
        while time.time() - t0 < args.limit_s and not done:
            if "server up" not in seen and healthy(args.port):
                note("server up", time.time())
            for m in read_milestones(run):
                key = f"{m['event']} {m.get('n_tokens', '')}".strip()
                if key not in seen:
                    note(key, m["time"], f"  {json.dumps({k: v for k, v in m.items() if k not in ('time', 'event')})}")
            done = "server up" in seen and any(k.startswith("first score") for k in seen) and any(
                m.get("complete") for m in read_milestones(run))
            if proc.poll() is not None:
                print(f"make app exited with {proc.returncode}", flush=True)
                break
            time.sleep(1.0)
        for job in jobs.list_jobs(data):
            if job.state == "running":
                print(f"job {job.title}: {job.progress}", flush=True)
    finally:
        if not args.keep:
            for job in jobs.list_jobs(data):
                if job.state == "running":
                    job.cancel()
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


if __name__ == "__main__":
    main()
