"""The child side of a background job: `python -m autointerp.jobrunner <job dir> -- <command>
<args> [-- ...]` runs the CLI steps in order (autointerp/jobs/ launches it). It records the exit
code in status.json even when a step fails, and turns SIGTERM into KeyboardInterrupt, so the
pipeline keeps the parts it completed. An entry point, like the CLI it calls."""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path

from autointerp.core import progress
from autointerp.core.atomic import atomic_write_json
from autointerp.jobs import split_steps

_terminated = False


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interrupt; cancel() follows up with SIGKILL
    raise KeyboardInterrupt


def run_steps(job_dir: Path, steps: list[list[str]]) -> int:
    from autointerp.cli import main

    rc, step = 0, 0
    for step, argv in enumerate(steps, 1):
        progress.set_step(step, len(steps))
        print(f"$ autointerp {' '.join(argv)}", flush=True)
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001  (the status must be recorded whatever happened)
            # DuckDB turns a KeyboardInterrupt raised mid-query into RuntimeError("Query
            # interrupted"), so after SIGTERM any exception counts as the interruption
            if isinstance(e, KeyboardInterrupt) or _terminated:
                print("interrupted: completed parts are kept", file=sys.stderr)
                rc = 130
            else:  # a bug: keep the traceback in the log, still record the status
                traceback.print_exc()
                rc = 1
        if rc != 0:
            break
    atomic_write_json(job_dir / "status.json", {"rc": rc, "finished": time.time(), "step": step}, durable=False)
    return rc


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(run_steps(Path(sys.argv[1]), split_steps(sys.argv[2:])))
