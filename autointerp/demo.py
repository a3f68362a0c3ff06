"""`autointerp demo`: the embedded end-to-end demo on real models, idempotent.

Steps: convert SmolLM2-135M-Instruct from its shipped GGUF (once) -> train the demo SAEs (skipped
when their folders exist) -> cache them plus a top-k neuron baseline over the Wikipedia corpus
(resumes or returns at once when complete).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from autointerp.cache import cache_run
from autointerp.config import CacheConfig, DemoConfig, TrainConfig
from autointerp.paths import data_dir
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
    return run_dir
