"""Progress of the running background job, reported by the pipeline after each unit of work.

A job (autointerp/jobs/ launches it, autointerp/jobrunner.py runs its steps) names its folder in
AUTOINTERP_JOB_DIR; report_progress writes `progress.json` there and is a no-op outside a job, so
the stages call it unconditionally without knowing about jobs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from autointerp.core.atomic import atomic_write_json

log = logging.getLogger(__name__)

JOB_DIR_ENV = "AUTOINTERP_JOB_DIR"

_progress_started: float | None = None
_step = (1, 1)
_failed_by_step: dict[int, int] = {}


def set_step(step: int, n_steps: int) -> None:
    """The job runner's current step (1-based) of n_steps: progress.json names it."""
    global _step
    _step = (step, n_steps)


def report_progress(done: int, total: int, unit: str = "latent", failed: int = 0, initial: int = 0) -> None:
    """Called by the pipeline after each unit of work; a no-op outside a job. `done == initial`
    marks the start of the timed work (after model loading), which is what the rate and the ETA are
    measured from; `initial` counts units done before (a resumed or growing cache).
    `failed` counts this step's units that could not be done (e.g. unparseable explanations); the
    job's total over all steps is kept in progress.json too."""
    job_dir = os.environ.get(JOB_DIR_ENV)
    if not job_dir:
        return
    global _progress_started
    now = time.time()
    if done == initial or _progress_started is None:
        _progress_started = now
    _failed_by_step[_step[0]] = int(failed)
    try:
        atomic_write_json(Path(job_dir) / "progress.json",
                          {"done": int(done), "total": int(total), "unit": unit, "updated": now,
                           "started": _progress_started, "initial": int(initial), "step": _step[0],
                           "n_steps": _step[1], "failed": int(failed),
                           "failed_total": sum(_failed_by_step.values())}, durable=False)
    except OSError as e:  # progress is advisory: never let it break the work
        log.warning("could not write job progress: %s", e)
