"""Streaming activation cache: corpus -> subject -> coders -> Parquet parts -> sorted per-set files.

Resume protocol: contexts are cut into parts of `part_contexts`. A part is done when every latent
set's part file has been renamed into place and then `progress/part-N.done` written. A restarted run
skips done parts and rewrites the others, so a kill at any moment (Ctrl-C or kill -9) leaves
no duplicated or missing rows. Memory is bounded by one part, whatever the number of tokens.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from autointerp.coders import CoderSpec, SaeLensCoder, SparseCoder, build_coder, check_context_metadata
from autointerp.config import CacheConfig
from autointerp.corpus import load_texts, tokenize_contexts
from autointerp.devices import resolve_device, resolve_dtype
from autointerp.errors import AutointerpError
from autointerp.faults import fault_point
from autointerp.store import (ACT_SCHEMA, TOKENS_NPY, atomic_write_bytes, atomic_write_json, finalize_latent_set,
                              remove_stale_temp, run_path, write_parquet_atomic)
from autointerp.subject import Subject, load_subject

log = logging.getLogger(__name__)

WINDOW = 32
# Settings that decide the run's content: a resumed run must match them exactly.
_IDENTITY_KEYS = ("model", "corpus", "ctx_len", "n_contexts", "seed", "part_contexts", "coders")


def code_to_table(code, doc_ids: np.ndarray, ctx_len: int) -> pa.Table:
    """Sparse code of tokens [n_ctx * ctx_len] (positions 1..ctx_len) into (latent, doc_id, pos, value) rows."""
    values = code.values.cpu().numpy()
    indices = code.indices.cpu().numpy()
    keep = values != 0
    rows, cols = np.nonzero(keep)
    tok_doc = np.repeat(doc_ids.astype(np.int32), ctx_len)
    tok_pos = np.tile(np.arange(1, ctx_len + 1, dtype=np.int16), len(doc_ids))
    return pa.table([pa.array(indices[rows, cols].astype(np.int32)),
                     pa.array(tok_doc[rows]), pa.array(tok_pos[rows]),
                     pa.array(values[rows, cols].astype(np.float32))], schema=ACT_SCHEMA)


def _token_strings(tokenizer, ids: np.ndarray) -> pa.Table:
    """Each token id's text, and whether it is one of the subject's special (control) tokens: the
    store shows those as one neutral marker, whatever their form (`<|im_end|>`, `<eos>`, ...)."""
    uniq = np.unique(ids)
    strings = [tokenizer.decode([int(t)]) for t in uniq]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    return pa.table({"token_id": pa.array(uniq.astype(np.int32)), "token": pa.array(strings),
                     "special": pa.array(np.isin(uniq, sorted(special)))})


def _tokens_table(contexts: np.ndarray) -> pa.Table:
    n, width = contexts.shape
    return pa.table({"doc_id": pa.array(np.repeat(np.arange(n, dtype=np.int32), width)),
                     "pos": pa.array(np.tile(np.arange(width, dtype=np.int16), n)),
                     "token_id": pa.array(contexts.reshape(-1))})


def _prepare_run(run_dir: Path, manifest: dict, contexts: np.ndarray, tokenizer) -> dict:
    """Create the run's manifest and token files, or check an existing run matches the request."""
    existing_file = run_dir / "run.json"
    if existing_file.exists():
        existing = json.loads(existing_file.read_text())
        diff = [k for k in _IDENTITY_KEYS if existing.get(k) != manifest.get(k)]
        if diff:
            raise AutointerpError(
                f"run {run_dir} already exists with different {', '.join(diff)}: choose a new --run name "
                f"or delete {run_dir}")
        manifest = {**manifest, **{k: existing[k] for k in ("created", "status") if k in existing}}
        for key in ("dtype", "coder_dtype"):  # a resume in another dtype: both are named, in order
            before = existing.get(key)
            if before and existing.get("status") != "complete" and manifest[key] not in before.split(" then "):
                log.warning("run %s was cached in %s %s; its remaining parts are cached in %s", run_dir, key,
                            before, manifest[key])
                manifest[key] = f"{before} then {manifest[key]}"
            elif before:
                manifest[key] = before
    else:
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest["status"] = "caching"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "tokens.parquet").exists():
        write_parquet_atomic(_tokens_table(contexts), run_dir / "tokens.parquet")
    if not (run_dir / TOKENS_NPY).exists():  # the same matrix, memory-mapped by readers
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(contexts, dtype=np.int32))
        atomic_write_bytes(run_dir / TOKENS_NPY, buf.getvalue())
    if not (run_dir / "token_strings.parquet").exists():
        write_parquet_atomic(_token_strings(tokenizer, contexts), run_dir / "token_strings.parquet")
    atomic_write_json(run_dir / "run.json", manifest)
    return manifest


@dataclass
class CacheJob:
    """An opened run: the subject, its coders and the corpus contexts, ready to cache parts."""

    cfg: CacheConfig
    run_dir: Path
    subject: Subject
    coders: list[SparseCoder]
    names: list[str]
    contexts: np.ndarray
    manifest: dict

    @property
    def n_parts(self) -> int:
        return -(-len(self.contexts) // self.cfg.part_contexts)

    def part_tokens(self, p: int) -> int:
        """Tokens cached by part p (the last part may be short)."""
        return min(self.cfg.part_contexts, len(self.contexts) - p * self.cfg.part_contexts) * self.cfg.ctx_len

    def todo(self) -> list[int]:
        """Parts not yet done (a part is done once its .done marker is written)."""
        progress = self.run_dir / "progress"
        return [p for p in range(self.n_parts) if not (progress / f"part-{p:05d}.done").exists()]

    def compute_part(self, p: int, on_batch=None) -> dict[str, list[pa.Table]]:
        """Part p's activations, as tables per latent set (nothing written)."""
        cfg, hookpoints = self.cfg, sorted({c.hookpoint for c in self.coders})
        lo, hi = p * cfg.part_contexts, min(len(self.contexts), (p + 1) * cfg.part_contexts)
        tables: dict[str, list[pa.Table]] = {n: [] for n in self.names}
        for start in range(lo, hi, cfg.batch_contexts):
            stop = min(hi, start + cfg.batch_contexts)
            acts = self.subject.activations(torch.from_numpy(self.contexts[start:stop]).long(), hookpoints)
            for name, coder in zip(self.names, self.coders):
                x = acts[coder.hookpoint][:, 1:].reshape(-1, coder.d_in)
                tables[name].append(code_to_table(coder.encode(x), np.arange(start, stop), cfg.ctx_len))
            if on_batch:
                on_batch((stop - start) * cfg.ctx_len)
        return tables

    def cache_part(self, p: int) -> int:
        """Compute and write part p (files, then its .done marker); the tokens it cached."""
        _write_part(self.run_dir, self.names, self.compute_part(p), p)
        fault_point("cache-part-written")
        return self.part_tokens(p)


def open_cache(cfg: CacheConfig, subject: Subject | None = None, prepare: bool = True) -> CacheJob:
    """Load the subject and coders, tokenize the corpus, and (prepare) create the run folder or
    check that an existing one was made with the same settings. Without prepare the run must exist
    (a distributed worker opens the run its driver prepared)."""
    if not cfg.coders:
        raise AutointerpError("no coders given: pass --coders, e.g. sae:data/saes/smollm2/resid_post.15")
    run_dir = run_path(cfg.run)
    specs = [CoderSpec.parse(c) for c in cfg.coders]
    device = resolve_device(cfg.device) if subject is None else str(subject.device)
    subject = subject or load_subject(cfg.model, cfg.dtype, device)
    coder_dtype = resolve_dtype(cfg.coder_dtype, device, subject.d_model)
    coders: list[SparseCoder] = [build_coder(s, subject, dtype=coder_dtype, device=device) for s in specs]
    names = [s.default_name(c.hookpoint) for s, c in zip(specs, coders)]
    for spec, coder in zip(cfg.coders, coders):  # SAEs trained on shorter contexts than ours: warn
        if isinstance(coder, SaeLensCoder):
            check_context_metadata(spec, None, coder.context_size, cfg.ctx_len)
    if len(set(names)) != len(names):
        raise AutointerpError(f"two coders would share the latent set name in {names}: give each a distinct kind "
                              f"or hookpoint")
    contexts = tokenize_contexts(load_texts(cfg.corpus), subject.tokenizer, cfg.ctx_len, cfg.tokens, cfg.seed)
    if not prepare:
        manifest = json.loads((run_dir / "run.json").read_text())
        return CacheJob(cfg, run_dir, subject, coders, names, contexts, manifest)
    n_ctx = len(contexts)
    manifest = {
        "name": run_dir.name, "model": cfg.model, "corpus": cfg.corpus, "ctx_len": cfg.ctx_len,
        "n_contexts": n_ctx, "n_tokens": n_ctx * cfg.ctx_len, "window": WINDOW, "seed": cfg.seed,
        "part_contexts": cfg.part_contexts,
        # the dtypes this cache computed in (what --dtype / --coder-dtype auto resolved to here)
        "dtype": str(subject.dtype).removeprefix("torch."), "coder_dtype": coder_dtype, "device": device,
        "coders": {n: {**c.describe(), "spec": s} for n, c, s in zip(names, coders, cfg.coders)},
        "subject": {"n_layers": subject.n_layers, "d_model": subject.d_model, "d_mlp": subject.d_mlp},
        "config": asdict(cfg),
    }
    for folder in (run_dir, run_dir / "progress", *(run_dir / "acts" / n / "parts" for n in names)):
        remove_stale_temp(folder)
    manifest = _prepare_run(run_dir, manifest, contexts, subject.tokenizer)
    return CacheJob(cfg, run_dir, subject, coders, names, contexts, manifest)


def cache_run(cfg: CacheConfig, subject: Subject | None = None) -> Path:
    """Cache every coder's activations over the corpus into the run folder; resumable. With
    cfg.ray the parts are spread over a Ray cluster (distributed.py)."""
    if cfg.ray:
        from autointerp.distributed import cache_distributed

        return cache_distributed(cfg)
    job = open_cache(cfg, subject)
    if job.manifest.get("status") == "complete":
        log.info("run %s is already complete", job.run_dir)
        return job.run_dir
    todo, total = job.todo(), job.manifest["n_tokens"]
    bar = tqdm(total=total, initial=total - sum(job.part_tokens(p) for p in todo), unit="tok", unit_scale=True,
               desc=f"cache {job.run_dir.name}", smoothing=0.1)
    # Parquet writing runs in a thread (pyarrow releases the GIL) while the next part computes.
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pending: concurrent.futures.Future | None = None
    t_start, n_new = time.perf_counter(), 0
    try:
        for p in todo:
            tables = job.compute_part(p, on_batch=bar.update)
            n_new += job.part_tokens(p)
            if pending is not None:
                pending.result()
                fault_point("cache-part-written")
            pending = writer.submit(_write_part, job.run_dir, job.names, tables, p)
        if pending is not None:
            pending.result()
            fault_point("cache-part-written")
    finally:
        writer.shutdown(wait=True)
        bar.close()
    return finish_cache(job.run_dir, job.manifest, n_new, time.perf_counter() - t_start, cfg.histogram_bins)


def finish_cache(run_dir: Path, manifest: dict, n_new: int, stream_s: float, histogram_bins: int) -> Path:
    """Once every part is done: sort each latent set, compute its latent table, mark the run
    complete. Needs no model: everything comes from the manifest."""
    manifest["stream_stats"] = {"tokens": n_new, "seconds": round(stream_s, 2),
                                "tok_per_s": round(n_new / stream_s) if n_new else None}
    for name, coder in manifest["coders"].items():
        set_dir = run_dir / "acts" / name
        if not (set_dir / "latents.parquet").exists():
            log.info("finalizing %s", name)
            finalize_latent_set(run_dir, name, coder["n_latents"], manifest["n_tokens"], histogram_bins)
        shutil.rmtree(set_dir / "parts", ignore_errors=True)
    shutil.rmtree(run_dir / ".duckdb-tmp", ignore_errors=True)
    manifest["status"] = "complete"
    atomic_write_json(run_dir / "run.json", manifest)
    shutil.rmtree(run_dir / "progress", ignore_errors=True)
    return run_dir


def _write_part(run_dir: Path, names: list[str], tables: dict[str, list[pa.Table]], p: int) -> None:
    for name in names:
        table = pa.concat_tables(tables[name])
        write_parquet_atomic(table, run_dir / "acts" / name / "parts" / f"part-{p:05d}.parquet")
    atomic_write_bytes(run_dir / "progress" / f"part-{p:05d}.done", b"")
