"""Training the demo's top-k SAEs with sae-lens's trainer on activations we collect ourselves.

sae-lens's own runner streams a Hugging Face dataset through transformer-lens, which needs the hub;
its `SAETrainer` accepts any iterator of activation batches, so we feed it activations from our
subject (one forward pass for all hookpoints) and keep the training loop, aux-k loss for dead
latents, normalisation and saving in the maintained library.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from autointerp.config import TrainConfig
from autointerp.models.corpus import load_texts, tokenize_contexts
from autointerp.models.subject import Subject, load_subject

log = logging.getLogger(__name__)


def collect_activations(subject: Subject, contexts: np.ndarray, hookpoints: list[str],
                        batch_contexts: int = 64) -> dict[str, torch.Tensor]:
    """Activations [n_tokens, d] per hookpoint over all contexts, position 0 (BOS sink) dropped."""
    chunks: dict[str, list[torch.Tensor]] = {h: [] for h in hookpoints}
    for start in range(0, len(contexts), batch_contexts):
        ids = torch.from_numpy(contexts[start:start + batch_contexts]).long()
        acts = subject.activations(ids, hookpoints)
        for h in hookpoints:
            chunks[h].append(acts[h][:, 1:].reshape(-1, acts[h].shape[-1]).to(torch.bfloat16))
    return {h: torch.cat(c) for h, c in chunks.items()}


def _massive(acts: torch.Tensor, factor: float) -> torch.Tensor:
    norms = acts.float().norm(dim=1)
    return norms > factor * norms.median()


def drop_massive_activations(acts: torch.Tensor, factor: float) -> tuple[torch.Tensor, int]:
    """Drop tokens whose norm exceeds `factor` x the median. SmolLM2 puts attention-sink "massive
    activations" (norm ~26,000 vs ~170) on ~0.1% of tokens, mostly the first after BOS; left in,
    they hold >90% of the variance and the SAE spends its capacity on them."""
    keep = ~_massive(acts, factor)
    return acts[keep], int((~keep).sum())


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches (new permutation each epoch)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(acts), generator=g)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield acts[perm[i:i + batch_size]].float()


@torch.no_grad()
def evaluate(sae, acts: torch.Tensor, batch: int = 4096) -> dict:
    """Fraction of variance unexplained, mean L0 and share of latents that never fire."""
    sse = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    l0 = 0.0
    x_all = acts.float()
    mean = x_all.mean(dim=0)
    sst = float(((x_all - mean) ** 2).sum())
    for i in range(0, len(acts), batch):
        x = x_all[i:i + batch]
        z = sae.encode(x)
        sse += float(((sae.decode(z) - x) ** 2).sum())
        nz = z != 0
        fired |= nz.any(dim=0)
        l0 += float(nz.sum())
    return {"fvu": sse / sst, "l0": l0 / len(acts), "dead_pct": 100.0 * float((~fired).float().mean()),
            "eval_tokens": int(len(acts))}


def train_one(acts: torch.Tensor, eval_acts: torch.Tensor, hookpoint: str, cfg: TrainConfig,
              model_name: str, out_dir: Path, n_dropped: int = 0, subject_dtype: str = "") -> dict:
    """Train one top-k SAE (bfloat16 autocast as train_autocast decides)."""
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    from autointerp.models.subject import Hookpoint

    torch.manual_seed(cfg.seed)
    d_in = acts.shape[1]
    sae_cfg = TopKTrainingSAEConfig(
        d_in=d_in, d_sae=cfg.n_latents, k=cfg.k, dtype="float32", device="cpu",
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(model_name=model_name, hook_name=Hookpoint.parse(hookpoint).sae_lens_name,
                             context_size=cfg.ctx_len + 1, prepend_bos=True),
    )
    sae = TopKTrainingSAE(sae_cfg)
    # Start the decoder bias at the data mean (in the normalised space sae-lens trains in, where
    # the mean norm is sqrt(d_in)): the residual stream has a large constant offset, and an SAE that
    # must learn it first leaves most latents dead.
    sample = acts[:65536].float()
    sae.b_dec.data[:] = sample.mean(dim=0) * (d_in ** 0.5 / sample.norm(dim=1).mean())
    total = cfg.epochs * len(acts)
    steps = total // cfg.batch_size
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total, train_batch_size_samples=cfg.batch_size, lr=cfg.lr, lr_end=cfg.lr / 10,
        lr_scheduler_name="constant", lr_warm_up_steps=max(1, steps // 20), lr_decay_steps=steps // 5,
        dead_feature_window=cfg.dead_feature_window, feature_sampling_window=max(steps, 1),
        n_batches_for_norm_estimate=20, device="cpu",
        autocast=train_autocast(cfg),
    )
    t0 = time.time()
    SAETrainer(trainer_cfg, sae, _batches(acts, cfg.batch_size, cfg.seed)).fit()
    train_s = time.time() - t0
    metrics = {"hookpoint": hookpoint, "n_latents": cfg.n_latents, "k": cfg.k,
               "train_tokens": int(len(acts)), "massive_tokens_dropped": n_dropped, "epochs": cfg.epochs, "steps": steps,
               "autocast": trainer_cfg.autocast, "subject_dtype": subject_dtype,
               "train_seconds": round(train_s, 1), "train_tok_per_s": round(total / train_s),
               **evaluate(sae, eval_acts)}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        sae.save_inference_model(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)  # a half-written SAE folder is never visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def train_autocast(cfg: TrainConfig) -> bool:
    """bfloat16 autocast only where bfloat16 is the dtype --dtype resolves to on this machine."""
    from autointerp.core.devices import resolve_dtype

    return cfg.autocast and resolve_dtype(cfg.dtype, "cpu") == "bfloat16"


def train_saes(cfg: TrainConfig, subject: Subject | None = None) -> dict[str, dict]:
    """Train one top-k SAE per hookpoint; skip hookpoints whose SAE folder already exists."""
    out_root = Path(cfg.out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    todo = [h for h in cfg.hookpoints if not (out_root / h / "sae_weights.safetensors").exists()]
    results = {h: json.loads((out_root / h / "metrics.json").read_text())
               for h in cfg.hookpoints if h not in todo and (out_root / h / "metrics.json").exists()}
    if not todo:
        return results
    subject = subject or load_subject(cfg.model, cfg.dtype)
    for h in todo:
        subject.hookpoint(h)
    contexts = tokenize_contexts(load_texts(cfg.corpus), subject.tokenizer, cfg.ctx_len,
                                 cfg.tokens + cfg.eval_tokens, seed=cfg.seed + 1)
    n_eval = max(1, round(len(contexts) * cfg.eval_tokens / (cfg.tokens + cfg.eval_tokens)))
    log.info("collecting activations for %s over %d tokens", todo, contexts.size)
    t0 = time.time()
    acts = collect_activations(subject, contexts, todo)
    log.info("collected in %.0f s", time.time() - t0)
    n_eval_tok = n_eval * cfg.ctx_len
    for h in todo:
        x, n_dropped = drop_massive_activations(acts[h], cfg.outlier_factor)
        n_eval_kept = int((~_massive(acts[h][:n_eval_tok], cfg.outlier_factor)).sum())
        m = train_one(x[n_eval_kept:], x[:n_eval_kept], h, cfg, subject.name, out_root / h, n_dropped,
                      subject_dtype=str(subject.dtype).removeprefix("torch."))
        log.info("%s: FVU %.3f  L0 %.1f  dead %.1f%%  (%d tok/s)", h, m["fvu"], m["l0"], m["dead_pct"],
                 m["train_tok_per_s"])
        results[h] = m
        del acts[h]
    return results
