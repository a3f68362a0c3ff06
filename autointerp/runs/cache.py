"""The cache command's runner: the streaming cache here, or its parts spread over Ray workers."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from autointerp.cache.streaming import CacheJob, finish_cache, open_cache, stream_cache
from autointerp.config import CacheConfig
from autointerp.models.subject import Subject
from autointerp.runs.executor import UnitWorker, connect, run_pool, start_workers, worker_options
from autointerp.store import run_path

log = logging.getLogger(__name__)


def cache_run(cfg: CacheConfig, subject: Subject | None = None) -> Path:
    """Cache every coder's activations over the corpus into the run folder; resumable (see
    stream_cache). With cfg.ray the corpus parts are spread over a Ray cluster."""
    if cfg.ray:
        return cache_on_ray(cfg)
    return stream_cache(cfg, subject)


def cache_worker(cfg: CacheConfig, prepare: bool) -> CacheJob:
    """A Ray worker's work: the opened run, caching one part per call."""
    return open_cache(cfg, prepare=prepare)


def cache_on_ray(cfg: CacheConfig) -> Path:
    """Corpus parts spread over Ray workers; what is written is what cache_run writes."""
    ray = connect(cfg.ray)
    options = worker_options(ray, cfg.device, cfg.ray_workers)
    run_dir = run_path(cfg.run)
    # One worker creates (or checks) the run folder; the others open what it made.
    actors = start_workers(ray, UnitWorker, options[:1], cache_worker, cfg, True)
    try:
        state = ray.get(actors[0].ready.remote())
        if state["status"] == "complete":
            log.info("run %s is already complete", run_dir)
            return run_dir
        if len(options) > 1:
            actors += start_workers(ray, UnitWorker, options[1:], cache_worker, cfg, False)
        log.info("caching %d parts of %s on %d Ray workers", len(state["todo"]), run_dir.name, len(actors))
        t0, n_new = time.perf_counter(), 0
        with tqdm(total=len(state["todo"]), desc=f"cache {run_dir.name} (ray)", unit="part") as bar:
            def done(_p, tokens):
                nonlocal n_new
                n_new += tokens
                bar.update(1)

            run_pool(ray, actors, "run", state["todo"], done)
    finally:
        for a in actors:
            ray.kill(a)
    manifest = json.loads((run_dir / "run.json").read_text())
    return finish_cache(run_dir, manifest, n_new, time.perf_counter() - t0, cfg.histogram_bins)
