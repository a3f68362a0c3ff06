"""Streaming activation cache: corpus -> subject -> coders -> Parquet parts -> sorted per-set files.

Resume protocol: contexts are cut into parts of `part_contexts`. A part is done when every latent
set's part file has been renamed into place and then `progress/part-N.done` written. A restarted run
skips done parts and rewrites the others, so a kill at any moment (Ctrl-C or kill -9) leaves
no duplicated or missing rows. Memory is bounded by one part, whatever the number of tokens.

Growing: a run is *published* (browsable) up to `n_contexts` of run.json; each set's acts.parquet
records the contexts it covers in its Parquet metadata. Publishing merges the parts of the next
contexts into each set's sorted file (old rows + new rows, one sort), then raises run.json's
`n_contexts`: every visible set always covers at least what run.json says, so readers never draw
from contexts not yet cached. So a run can be published early (`publish_after_s`: a time-budgeted
first size) and keep growing, and a complete run asked for more tokens grows in place when its
contexts are a prefix of the larger request (corpus.tokenize_contexts keeps that property; the
token matrix is compared to be sure). The parts of a growth are numbered in the same grid
(`plan` in run.json: origin, target, part_contexts), so a kill mid-growth resumes like any cache.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from autointerp.models.coders import CoderSpec, SaeLensCoder, SparseCoder, build_coder, check_context_metadata
from autointerp.config import CacheConfig
from autointerp.models.corpus import load_texts, tokenize_contexts
from autointerp.core.devices import resolve_device, resolve_dtype
from autointerp.core.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temp
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point
from autointerp.core.progress import report_progress
from autointerp.core.milestones import record_milestone
from autointerp.store import ACT_SCHEMA, TOKENS_NPY, publish_latent_set, run_path, write_parquet_atomic
from autointerp.models.subject import Subject, load_subject, random_init_copy, variant_seed

log = logging.getLogger(__name__)

WINDOW = 32
# Settings that decide the run's content: a resumed or grown run must match them exactly. The number
# of contexts may grow (a complete run whose contexts are a prefix of the request); the part size
# is the unit of resume, fixed while a run is caching or growing (plan), free once it is complete.
_IDENTITY_KEYS = ("model", "corpus", "ctx_len", "seed", "coders")


@dataclass(frozen=True)
class Plan:
    """The parts being cached: contexts [origin, target) in the grid of part_contexts; part p
    covers [max(p * part_contexts, origin), min((p + 1) * part_contexts, target))."""

    origin: int
    target: int
    part_contexts: int

    @classmethod
    def of(cls, manifest: dict) -> Plan:
        plan = manifest.get("plan")
        if plan:
            return cls(int(plan["origin"]), int(plan["target"]), int(plan["part_contexts"]))
        return cls(0, int(manifest["n_contexts"]), int(manifest["part_contexts"]))  # runs cached before plans

    def parts(self) -> range:
        return range(self.origin // self.part_contexts, -(-self.target // self.part_contexts))

    def span(self, p: int) -> tuple[int, int]:
        return max(p * self.part_contexts, self.origin), min((p + 1) * self.part_contexts, self.target)


def published_contexts(manifest: dict) -> int:
    """Contexts a run's readers see: all of them once complete, n_contexts while growing, none while
    a first cache is still running."""
    return int(manifest["n_contexts"]) if manifest.get("status") in ("complete", "growing") else 0


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


def _same_prefix(run_dir: Path, contexts: np.ndarray) -> bool:
    """Whether the run's stored token matrix and `contexts` agree on the contexts both hold."""
    path = run_dir / TOKENS_NPY
    if not path.exists():
        return True
    stored = np.load(path, mmap_mode="r")
    n = min(len(stored), len(contexts))
    return stored.shape[1] == contexts.shape[1] and np.array_equal(stored[:n], contexts[:n])


def _write_tokens(run_dir: Path, contexts: np.ndarray, tokenizer) -> None:
    """The token matrix of every context planned (readers use the first n_contexts of it) and the
    strings of every token in it."""
    write_parquet_atomic(_tokens_table(contexts), run_dir / "tokens.parquet")
    write_parquet_atomic(_token_strings(tokenizer, contexts), run_dir / "token_strings.parquet")
    buf = io.BytesIO()  # the same matrix, memory-mapped by readers; written last: readers key on it
    np.save(buf, np.ascontiguousarray(contexts, dtype=np.int32))
    atomic_write_bytes(run_dir / TOKENS_NPY, buf.getvalue())


def _prepare_run(run_dir: Path, manifest: dict, contexts: np.ndarray, tokenizer) -> dict:
    """Create the run's manifest and token files, or check an existing run matches the request:
    resume it, or grow a complete run whose contexts are a prefix of the request."""
    existing_file = run_dir / "run.json"
    target = len(contexts)
    plan = Plan(0, target, manifest["part_contexts"])
    if existing_file.exists():
        existing = json.loads(existing_file.read_text())
        diff = [k for k in _IDENTITY_KEYS if existing.get(k) != manifest.get(k)]
        if diff:
            raise AutointerpError(
                f"run {run_dir} already exists with different {', '.join(diff)}: choose a new --run name "
                f"or delete {run_dir}")
        status, have = existing.get("status"), int(existing["n_contexts"])
        ctx_len = manifest["ctx_len"]
        if status == "complete" and target < have:
            raise AutointerpError(f"run {run_dir} holds {have * ctx_len} tokens, more than the {target * ctx_len} "
                                  f"asked for: a run only grows; ask for at least {have * ctx_len} or choose a new "
                                  f"--run name")
        if status != "complete":  # caching or growing: the plan it started is kept until it completes
            old = Plan.of(existing)
            if (old.target, old.part_contexts) != (target, plan.part_contexts):
                raise AutointerpError(
                    f"run {run_dir} is being cached to {old.target * ctx_len} tokens in parts of {old.part_contexts} "
                    f"contexts: finish it with --tokens {old.target * ctx_len} --part-contexts {old.part_contexts} "
                    f"(it can grow once complete), or choose a new --run name")
            plan = old
        if not _same_prefix(run_dir, contexts):
            raise AutointerpError(f"the corpus no longer tokenizes into the contexts run {run_dir} was cached on "
                                  f"(another tokenizer or corpus file): choose a new --run name or delete {run_dir}")
        growing = status == "complete" and target > have
        if growing:
            plan = Plan(have, target, plan.part_contexts)
            log.info("run %s grows from %d to %d tokens: only the new contexts are cached", run_dir.name,
                     have * ctx_len, target * ctx_len)
        keep = ("created", "status", "n_contexts", "n_tokens", "stream_stats")
        manifest = {**manifest, **{k: existing[k] for k in keep if k in existing}}
        for key in ("dtype", "coder_dtype"):  # a resume in another dtype: both are named, in order
            before = existing.get(key)
            if before and (status != "complete" or growing) and manifest[key] not in before.split(" then "):
                log.warning("run %s was cached in %s %s; its remaining parts are cached in %s", run_dir, key,
                            before, manifest[key])
                manifest[key] = f"{before} then {manifest[key]}"
            elif before:
                manifest[key] = before
        if growing:
            manifest["status"] = "growing"
    else:
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest["status"] = "caching"
    if manifest["status"] != "complete":
        manifest["plan"] = asdict(plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    names = (TOKENS_NPY, "tokens.parquet", "token_strings.parquet")
    if not all((run_dir / n).exists() for n in names) or len(np.load(run_dir / TOKENS_NPY, mmap_mode="r")) != target:
        _write_tokens(run_dir, contexts, tokenizer)
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
    # subject variants that some coders read instead of the subject ("random-init:0" -> its copy)
    variants: dict[str, Subject] = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        return Plan.of(self.manifest)

    def part_tokens(self, p: int) -> int:
        """Tokens cached by part p (the first part of a growth and the last part may be short)."""
        lo, hi = self.plan.span(p)
        return (hi - lo) * self.cfg.ctx_len

    def done(self, p: int) -> bool:
        """A part is done once its .done marker is written, or once it is published."""
        return (self.run_dir / "progress" / f"part-{p:05d}.done").exists() or \
            self.plan.span(p)[1] <= published_contexts(self.manifest)

    def todo(self) -> list[int]:
        """Parts not yet done."""
        return [p for p in self.plan.parts() if not self.done(p)]

    def done_prefix(self) -> int:
        """Contexts cached without a gap from the start: what could be published now."""
        end = self.plan.origin
        for p in self.plan.parts():
            if not self.done(p):
                break
            end = self.plan.span(p)[1]
        return max(end, published_contexts(self.manifest))

    def compute_part(self, p: int, on_batch=None) -> dict[str, list[pa.Table]]:
        """Part p's activations, as tables per latent set (nothing written)."""
        cfg = self.cfg
        subjects = {None: self.subject, **self.variants}
        variant_of = {name: self.manifest["coders"][name].get("subject_variant") for name in self.names}
        hookpoints = {v: sorted({c.hookpoint for n, c in zip(self.names, self.coders) if variant_of[n] == v})
                      for v in subjects}
        lo, hi = self.plan.span(p)
        tables: dict[str, list[pa.Table]] = {n: [] for n in self.names}
        for start in range(lo, hi, cfg.batch_contexts):
            stop = min(hi, start + cfg.batch_contexts)
            ids = torch.from_numpy(self.contexts[start:stop]).long()
            acts = {v: subjects[v].activations(ids, hps) for v, hps in hookpoints.items() if hps}
            for name, coder in zip(self.names, self.coders):
                x = acts[variant_of[name]][coder.hookpoint][:, 1:].reshape(-1, coder.d_in)
                tables[name].append(code_to_table(coder.encode(x), np.arange(start, stop), cfg.ctx_len))
            if on_batch:
                on_batch((stop - start) * cfg.ctx_len)
        return tables

    def cache_part(self, p: int) -> int:
        """Compute and write part p (files, then its .done marker); the tokens it cached."""
        _write_part(self.run_dir, self.names, self.compute_part(p), p)
        fault_point("cache-part-written")
        return self.part_tokens(p)

    # a Ray worker's work (runs.executor.UnitWorker): one part per call
    __call__ = cache_part

    def state(self) -> dict:
        return {"status": self.manifest.get("status"), "todo": self.todo()}


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
    variants = {v: random_init_copy(subject, variant_seed(v))
                for v in dict.fromkeys(s.subject_variant for s in specs if s.subject_variant)}
    coders: list[SparseCoder] = [build_coder(s, variants.get(s.subject_variant, subject), dtype=coder_dtype,
                                             device=device) for s in specs]
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
        return CacheJob(cfg, run_dir, subject, coders, names, contexts, manifest, variants)
    n_ctx = len(contexts)
    manifest = {
        "name": run_dir.name, "model": cfg.model, "corpus": cfg.corpus, "ctx_len": cfg.ctx_len,
        "n_contexts": n_ctx, "n_tokens": n_ctx * cfg.ctx_len, "window": WINDOW, "seed": cfg.seed,
        "part_contexts": cfg.part_contexts,
        # the dtypes this cache computed in (what --dtype / --coder-dtype auto resolved to here)
        "dtype": str(subject.dtype).removeprefix("torch."), "coder_dtype": coder_dtype, "device": device,
        "coders": {n: {**c.describe(), "spec": s, **({"subject_variant": p.subject_variant} if p.subject_variant else {})}
                   for n, c, s, p in zip(names, coders, cfg.coders, specs)},
        "subject": {"n_layers": subject.n_layers, "d_model": subject.d_model, "d_mlp": subject.d_mlp},
        "config": asdict(cfg),
    }
    for folder in (run_dir, run_dir / "progress", *(run_dir / "acts" / n / "parts" for n in names)):
        remove_stale_temp(folder)
    manifest = _prepare_run(run_dir, manifest, contexts, subject.tokenizer)
    return CacheJob(cfg, run_dir, subject, coders, names, contexts, manifest, variants)


def stream_cache(cfg: CacheConfig, subject: Subject | None = None) -> Path:
    """Cache every coder's activations over the corpus into the run folder, in this process;
    resumable. With cfg.publish_after_s >= 0 the run is published (browsable) once that much caching
    time has passed and keeps growing (or, with cfg.stop_when_browsable, returns there)."""
    job = open_cache(cfg, subject)
    if job.manifest.get("status") == "complete":
        log.info("run %s is already complete", job.run_dir)
        return job.run_dir
    if cfg.stop_when_browsable and published_contexts(job.manifest):
        log.info("run %s is browsable (%d tokens); it grows in a later call", job.run_dir,
                 job.manifest["n_tokens"])
        return job.run_dir
    todo, total = job.todo(), job.plan.target * cfg.ctx_len
    initial = total - sum(job.part_tokens(p) for p in todo)
    bar = tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc=f"cache {job.run_dir.name}",
               smoothing=0.1)
    report_progress(initial, total, unit="token", initial=initial)

    def on_batch(n: int) -> None:
        bar.update(n)
        report_progress(bar.n, total, unit="token", initial=initial)

    # Parquet writing runs in a thread (pyarrow releases the GIL) while the next part computes.
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pending: concurrent.futures.Future | None = None
    t_start, n_new = time.perf_counter(), 0
    try:
        for i, p in enumerate(todo):
            tables = job.compute_part(p, on_batch=on_batch)
            n_new += job.part_tokens(p)
            if pending is not None:
                pending.result()
                fault_point("cache-part-written")
            pending = writer.submit(_write_part, job.run_dir, job.names, tables, p)
            due = 0 <= cfg.publish_after_s <= time.perf_counter() - t_start
            if due and not published_contexts(job.manifest) and i < len(todo) - 1:
                pending.result()
                fault_point("cache-part-written")
                pending = None
                publish(job.run_dir, job.manifest, job.done_prefix(), cfg.histogram_bins)
                fault_point("cache-published")
                if cfg.stop_when_browsable:
                    return job.run_dir
        if pending is not None:
            pending.result()
            fault_point("cache-part-written")
    finally:
        writer.shutdown(wait=True)
        bar.close()
    return finish_cache(job.run_dir, job.manifest, n_new, time.perf_counter() - t_start, cfg.histogram_bins)


def finish_cache(run_dir: Path, manifest: dict, n_new: int, stream_s: float, histogram_bins: int) -> Path:
    """Once every part is done: publish the whole plan (each set sorted, its latent table
    computed) and mark the run complete. Needs no model: everything comes from the manifest."""
    manifest["stream_stats"] = {"tokens": n_new, "seconds": round(stream_s, 2),
                                "tok_per_s": round(n_new / stream_s) if n_new else None}
    publish(run_dir, manifest, Plan.of(manifest).target, histogram_bins)
    return run_dir


def publish(run_dir: Path, manifest: dict, n_contexts: int, histogram_bins: int) -> dict:
    """Make the first n_contexts contexts browsable: merge each set's parts up to there into its
    sorted acts.parquet and latent table, then raise run.json's n_contexts (complete once the whole
    plan is published). Every step can be killed and run again: a set records the contexts its
    files cover, so a set already merged is skipped."""
    plan, ctx_len = Plan.of(manifest), manifest["ctx_len"]
    was = published_contexts(manifest)
    if manifest.get("status") == "caching" and n_contexts < plan.target:
        # the first, partial publish: lower the published size before any set appears
        manifest.update(status="growing", n_contexts=n_contexts, n_tokens=n_contexts * ctx_len)
        atomic_write_json(run_dir / "run.json", manifest)
    spans = {p: plan.span(p) for p in plan.parts()}
    for name, coder in manifest["coders"].items():
        publish_latent_set(run_dir, name, coder["n_latents"], n_contexts, ctx_len, spans, histogram_bins)
    complete = n_contexts >= plan.target
    manifest.update(n_contexts=n_contexts, n_tokens=n_contexts * ctx_len, status="complete" if complete else "growing")
    if complete:
        manifest.pop("plan", None)
    atomic_write_json(run_dir / "run.json", manifest)
    if complete:
        for name in manifest["coders"]:
            shutil.rmtree(run_dir / "acts" / name / "parts", ignore_errors=True)
        shutil.rmtree(run_dir / "progress", ignore_errors=True)
    shutil.rmtree(run_dir / ".duckdb-tmp", ignore_errors=True)
    event = "run browsable" if not was else "run grown"
    record_milestone(run_dir, event, n_tokens=n_contexts * ctx_len, complete=complete)
    log.info("run %s: %d tokens %s%s", run_dir.name, n_contexts * ctx_len, "published" if not was else "now",
             "" if complete else f" (growing to {plan.target * ctx_len})")
    return manifest


def _write_part(run_dir: Path, names: list[str], tables: dict[str, list[pa.Table]], p: int) -> None:
    for name in names:
        table = pa.concat_tables(tables[name])
        write_parquet_atomic(table, run_dir / "acts" / name / "parts" / f"part-{p:05d}.parquet")
    atomic_write_bytes(run_dir / "progress" / f"part-{p:05d}.done", b"")
