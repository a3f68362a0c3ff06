"""`autointerp demo`: the embedded end-to-end demo on real models, idempotent.

Steps: convert SmolLM2-135M-Instruct from its shipped GGUF (once) -> train the demo SAEs (skipped
when their folders exist) -> cache them plus a top-k neuron baseline over the Wikipedia corpus
(resumes or returns at once when complete) -> launch a background job that explains and scores
a few random latents of every latent set (skipped when they have scores or the job is running),
so the app is browsable at once and its score views fill in over minutes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from autointerp import jobs
from autointerp.cache import cache_run
from autointerp.config import CacheConfig, DemoConfig, InterpretConfig, TrainConfig
from autointerp.paths import data_dir
from autointerp.store import RunStore
from autointerp.subject import load_subject
from autointerp.train import train_saes

log = logging.getLogger(__name__)


def demo_sae_dir(cfg: DemoConfig) -> Path:
    return data_dir() / "saes" / f"smollm2-{cfg.n_latents}x{cfg.k}"


def run_demo(cfg: DemoConfig) -> Path:
    t0 = time.time()
    log.info("[1/3] subject model SmolLM2-135M-Instruct")
    subject = load_subject("smollm2")
    log.info("[2/3] demo SAEs on %s", ", ".join(cfg.hookpoints))
    sae_dir = demo_sae_dir(cfg)
    metrics = train_saes(TrainConfig(hookpoints=cfg.hookpoints, out_dir=str(sae_dir), n_latents=cfg.n_latents,
                                     k=cfg.k, tokens=cfg.train_tokens, epochs=cfg.epochs), subject=subject)
    for hp, m in metrics.items():
        log.info("  %s: FVU %.3f  L0 %.1f  dead %.1f%%", hp, m["fvu"], m["l0"], m["dead_pct"])
    log.info("[3/3] activation cache over %d tokens", cfg.tokens)
    coders = [f"sae:{sae_dir / hp}" for hp in cfg.hookpoints]
    if cfg.neuron_baseline:
        coders.append(f"topk:{cfg.k}@{cfg.neuron_baseline}")
    run_dir = cache_run(CacheConfig(run=cfg.run, model="smollm2", coders=coders, tokens=cfg.tokens),
                        subject=subject)
    log.info("demo ready in %.0f s: %s", time.time() - t0, run_dir)
    job = launch_demo_job(cfg, RunStore(run_dir))
    if job is not None:
        log.info("explaining and scoring %d latents per set in the background: job %s (see the app's Jobs page, "
                 "log %s)", cfg.interpret, job.id, job.log_path)
    return run_dir


DEMO_JOB_TITLE = "demo: explain + score"


def launch_demo_job(cfg: DemoConfig, store: RunStore) -> jobs.Job | None:
    """One job: explain then score `cfg.interpret` random latents of each set, the SAE sets of
    the middle layer first. None when disabled, already running, or every set has scores."""
    if cfg.interpret <= 0:
        return None
    if any(j.title == DEMO_JOB_TITLE and j.state == "running" for j in jobs.list_jobs()):
        return None
    steps = demo_steps(cfg, store)
    return jobs.launch_steps(steps, DEMO_JOB_TITLE) if steps else None


def demo_steps(cfg: DemoConfig, store: RunStore) -> list[tuple[str, list[str]]]:
    """The demo job's CLI steps: explain and score every set not scored yet, .15 sets first, then
    validate the first residual-stream set (when it has >= 3 latents) and intervention-score its
    latents. Those two come last: a job stops at its first failing step, and too many failed
    explanations make validate refuse."""
    scored = set(store.scores().hookpoint)
    sets = sorted((s for s in store.hookpoints() if s not in scored), key=lambda s: (".15" not in s, s))

    def args(s: str, scorers: list[str] | None = None) -> list[str]:
        return jobs.interpret_args(InterpretConfig(run=cfg.run, hookpoint=s, random=cfg.interpret,
                                                   model=cfg.interpret_model,
                                                   scorers=list(scorers or cfg.interpret_scorers)))

    steps: list[tuple[str, list[str]]] = []
    for s in sets:
        steps += [("explain", args(s)), ("score", args(s))]
    main_set = next((s for s in sets if s.startswith("resid_post.")), None)
    # One small validation (true vs random vs neutral explanation on the same latents) on the main
    # SAE set, so the app can say whether its scorers measure anything on this run.
    if main_set is not None and cfg.interpret >= 3:
        steps.append(("validate", args(main_set)))
    # The output side (the Latent page's steering table, the Scores page's Fig. 4) for the same latents.
    if main_set is not None and cfg.intervention:
        steps.append(("score", args(main_set, ["intervention"])))
    return steps
