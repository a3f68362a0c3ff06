"""The store and the app's data at the paper's scale: a synthetic run of >= 1M latents and >= 1B
activation rows, with explanations and scores for every latent, timed per query.

    .venv/bin/python bench/scale.py [--sets 8] [--latents 131072] [--rows 1000000000] [--tokens 10000000]
                                    [--dir /tmp/autointerp-scale] [--samples 50] [--parts 10000]

The run is written once and reused (delete --dir to rebuild); before writing, the free disk is
checked against an estimate (one-line error if short). Each latent set is written latent by latent
in sorted order (latent, value desc) through bench/store.py's streaming writer, so memory stays
bounded (one buffer of ~400k rows) whatever the size; frequencies are log-uniform over five decades with
a few very dense latents. Explanations (synthetic text) and detection + fuzzing scores go in one
results part per set. Printed side by side in one run (p50 / p95 ms over --samples latents):
each store query of the Latent page and the whole page's data (views.latent_page), Browse's first
page / a sort by a score / a switch of set (views.latent_frame, page_of), the Scores page's
table and correlations over every scored latent, the Overview's set summary, and the results
queries with --parts small result parts before and after `compact`; then the process's peak RSS;
then the cache's finalisation of one --latents SAE over --tokens tokens (--finalise-k latents per
token), in a child process whose peak RSS is printed.
The run's own results are compacted first (sorted by latent: what `autointerp compact` or a
campaign's automatic compaction leaves).
Compare with bench/store.py's 100M-row run (same queries).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from autointerp.core.errors import AutointerpError  # noqa: E402
from autointerp.store import (ACT_SCHEMA, RunStore, append_results, compact_results, compact_run,  # noqa: E402
                              result_part_counts)
from bench.child import cpu_line  # noqa: E402
from bench.store import write_run_files, write_sorted_acts  # noqa: E402

BYTES_PER_ROW = 11  # measured: zstd Parquet of (latent, doc_id, pos, value) sorted by latent
CTX_LEN = 64
WORDS = ("numbers", "dates", "code", "names", "French", "closing brackets", "plural nouns", "the word 'the'", "URLs",
         "legal text", "verbs of motion", "sports", "chemistry", "negation", "questions", "capital letters")


def set_name(i: int) -> str:
    return f"resid_post.{i}"


def check_disk(folder: Path, n_rows: int) -> None:
    need = n_rows * BYTES_PER_ROW * 1.3  # acts + latents + results + DuckDB's temp files for the stats
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise AutointerpError(f"{folder} has {free / 1e9:.1f} GB free and the run needs about {need / 1e9:.1f} GB: "
                              f"pass --dir on a larger disk or fewer --rows")


def write_set(set_dir: Path, n_latents: int, n_rows: int, n_tokens: int, rng: np.random.Generator) -> int:
    freq = np.exp(rng.uniform(np.log(1e-6), np.log(1e-1), n_latents))  # log-uniform over five decades
    freq[rng.choice(n_latents, 4, replace=False)] = 0.3  # a few very dense latents
    counts = np.minimum(np.floor(freq / freq.sum() * n_rows).astype(np.int64), n_tokens)
    return write_sorted_acts(set_dir, counts, n_tokens, CTX_LEN, rng)


def write_results(run_dir: Path, name: str, n_latents: int, rng: np.random.Generator) -> None:
    latents = np.arange(n_latents)
    words = rng.choice(len(WORDS), size=(n_latents, 2))
    texts = [f"{WORDS[a]} near {WORDS[b]} (latent {i})" for i, (a, b) in enumerate(words)]
    at = pd.Timestamp("2026-01-01")
    append_results(run_dir, "explanations", [{"hookpoint": name, "latent": int(i), "explanation": t, "model": "synthetic",
                                              "created_at": at} for i, t in zip(latents, texts)])
    rows = []
    for scorer in ("detection", "fuzzing"):
        auroc = np.clip(rng.normal(0.7, 0.12, n_latents), 0, 1)
        rows += [{"score_id": f"{name}-{scorer}-{i}", "hookpoint": name, "latent": int(i), "scorer": scorer,
                  "explanation": texts[i], "auroc": float(a), "auroc_lo": float(a) - 0.1, "auroc_hi": float(a) + 0.1,
                  "accuracy": float(a), "n": 20, "n_failed": 0, "created_at": at} for i, a in enumerate(auroc)]
    append_results(run_dir, "scores", rows)


def make_run(run_dir: Path, sets: int, n_latents: int, n_rows: int, n_tokens: int) -> None:
    if (run_dir / "run.json").exists():
        return
    check_disk(run_dir.parent, n_rows)
    rng = np.random.default_rng(0)
    n_ctx = n_tokens // CTX_LEN
    n_tokens = n_ctx * CTX_LEN
    t0 = time.perf_counter()
    total = 0
    for s in range(sets):
        name = set_name(s)
        total += write_set(run_dir / "acts" / name, n_latents, n_rows // sets, n_tokens, rng)
        write_results(run_dir, name, n_latents, rng)
        print(f"  set {name}: {total:,} rows so far, {time.perf_counter() - t0:.0f} s", flush=True)
    write_run_files(run_dir, n_ctx, CTX_LEN, rng, {"n_rows": int(total), "coders": {
        set_name(s): {"kind": "sae", "n_latents": n_latents} for s in range(sets)}})
    print(f"written: {total:,} rows, {sets * n_latents:,} latents, {n_tokens:,} tokens in "
          f"{time.perf_counter() - t0:.0f} s; {sum(f.stat().st_size for f in run_dir.rglob('*') if f.is_file()) / 1e9:.1f} GB",
          flush=True)


def finalise_child(folder: Path, n_latents: int, n_tokens: int, k: int, n_parts: int) -> None:
    """Cache parts of one SAE as the streaming cache leaves them (rows in token order, k latents
    per token drawn from log-uniform frequencies), then the cache's finaliser
    (store.publish_latent_set: one out-of-core DuckDB sort + latents.parquet), timed; this
    process's peak RSS is what the finaliser needs on top of the part writing's small buffers."""
    from autointerp.store import publish_latent_set

    rng = np.random.default_rng(2)
    n_ctx = n_tokens // CTX_LEN
    freq = np.exp(rng.uniform(np.log(1e-6), np.log(1e-1), n_latents))
    p = freq / freq.sum()
    parts = folder / "acts" / "sae" / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    spans, per = {}, -(-n_ctx // n_parts)
    t0 = time.perf_counter()
    for i in range(n_parts):
        lo, hi = i * per, min(n_ctx, (i + 1) * per)
        tokens = (hi - lo) * CTX_LEN
        latent = rng.choice(n_latents, size=(tokens, k), p=p).astype(np.int32).reshape(-1)
        tok = np.repeat(np.arange(tokens, dtype=np.int64), k)
        table = pa.table([pa.array(latent), pa.array((lo + tok // CTX_LEN).astype(np.int32)),
                          pa.array((tok % CTX_LEN + 1).astype(np.int16)),
                          pa.array(rng.exponential(1.0, tokens * k).astype(np.float32))], schema=ACT_SCHEMA)
        pq.write_table(table, parts / f"part-{i:05d}.parquet", compression="zstd")
        spans[i] = (lo, hi)
        del table, latent, tok
    written = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    publish_latent_set(folder, "sae", n_latents, n_ctx, CTX_LEN, spans)
    print(json.dumps({"rows": n_ctx * CTX_LEN * k, "parts_written_s": written, "finalise_s": time.perf_counter() - t0,
                      "peak_rss_mb_before": rss_before,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "acts_gb": (folder / "acts" / "sae" / "acts.parquet").stat().st_size / 1e9}), flush=True)


def finalise(dir_: Path, n_latents: int, n_tokens: int, k: int) -> None:
    import subprocess

    folder = dir_ / f"finalise-{n_latents}x{n_tokens}"
    shutil.rmtree(folder, ignore_errors=True)
    check_disk(dir_, n_tokens * k * 3)  # parts, the sorted file and DuckDB's spill files at once
    out = subprocess.run([sys.executable, __file__, "--finalise-child", str(folder), str(n_latents), str(n_tokens),
                          str(k)], capture_output=True, text=True)
    shutil.rmtree(folder, ignore_errors=True)
    if out.returncode:
        print(f"  finalisation failed: {out.stderr[-1500:]}")
        return
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  cache finalisation, {n_latents:,}-latent SAE over {n_tokens:,} tokens (k={k}: {r['rows']:,} rows): "
          f"parts written in {r['parts_written_s']:.0f} s, finalised (sort + latents.parquet) in "
          f"{r['finalise_s']:.0f} s; peak RSS {r['peak_rss_mb']:.0f} MB (writing the parts alone: "
          f"{r['peak_rss_mb_before']:.0f} MB); acts.parquet {r['acts_gb']:.1f} GB", flush=True)


def timed(fn, reps: int) -> tuple[float, float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def line(label: str, p50: float, p95: float, target: str = "") -> None:
    print(f"  {label:44s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   {target}", flush=True)


def bench(run_dir: Path, samples: int, n_parts: int) -> None:
    from autointerp import analysis
    from autointerp.app import views
    from bench.store import QUERIES

    parts = result_part_counts(run_dir)
    if parts["explanations"] > 1 or parts["scores"] > 1:  # as `autointerp compact` leaves a campaign's results
        t0 = time.perf_counter()
        compact_run(run_dir, grace_s=0)
        print(f"  compact the results ({parts['explanations']} + {parts['scores']} parts: one row per latent and "
              f"one per latent and scorer): {time.perf_counter() - t0:.1f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
    t0 = time.perf_counter()
    store = RunStore(run_dir)
    sets = store.hookpoints()
    _ = store.tokens, store.token_strings
    print(f"  open the run (RunStore, tokens): {(time.perf_counter() - t0) * 1000:.0f} ms")
    rng = np.random.default_rng(1)
    h = sets[0]
    latents = rng.integers(0, store.n_latents(h), samples + 3)
    for name, fn in QUERIES.items():
        for lat in latents[:3]:
            fn(store, h, int(lat), rng)
        t = []
        for lat in latents[3:]:
            t0 = time.perf_counter()
            fn(store, h, int(lat), rng)
            t.append((time.perf_counter() - t0) * 1000)
        line(name, float(np.percentile(t, 50)), float(np.percentile(t, 95)), "(target p95 < 50)")
    it = iter(latents[3:])
    line("whole Latent page data (views.latent_page)", *timed(lambda: views.latent_page(store, h, int(next(it))),
                                                              samples), "(target p95 < 100)")
    line(f"Browse: latent_frame of a {store.n_latents(h):,}-latent set", *timed(lambda: views.latent_frame(store, h), 3),
         "(first page, target < 1000)")
    frame = views.latent_frame(store, h)
    score_col = next(c for c in frame.columns if c in ("detection", "fuzzing"))
    line(f"Browse: sort by {score_col}, page 1", *timed(lambda: views.page_of(frame, score_col, True, 0, 50), 5),
         "(target < 1000)")
    line("Browse: switch set (latent_frame of another)",
         *timed(lambda: views.latent_frame(store, sets[int(rng.integers(1, len(sets)))] if len(sets) > 1 else h), 3),
         "(target < 1000)")
    line("Overview: set summary", *timed(lambda: views.set_summary(store), 3), "(first paint target < 5000)")
    table = analysis.score_table(store)
    line(f"Scores: score table over {len(table):,} scored latents", *timed(lambda: analysis.score_table(store), 3),
         "(target < 2000)")
    line("Scores: scorer correlations", *timed(lambda: analysis.scorer_correlations(table), 3), "(target < 2000)")
    print(f"  peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)

    # a long campaign: many small result parts, before and after compaction
    small = run_dir.parent / f"{run_dir.name}-parts"
    if not (small / "run.json").exists():
        shutil.rmtree(small, ignore_errors=True)
        (small / "results").mkdir(parents=True)
        shutil.copy(run_dir / "run.json", small / "run.json")
        at = pd.Timestamp("2026-01-01")
        for i in range(n_parts):
            append_results(small, "scores", [{"score_id": f"p{i}-{s}", "hookpoint": h, "latent": i % 5000, "scorer": s,
                                              "explanation": "x", "auroc": 0.7, "n": 20, "n_failed": 0,
                                              "created_at": at + pd.Timedelta(seconds=i)} for s in ("detection", "fuzzing")])
    parts_store = RunStore(small)
    lat = iter(rng.integers(0, 5000, 1000))
    line(f"{n_parts:,} parts: current_scores of a set", *timed(lambda: parts_store.current_scores(h), 3), "(target < 2000)")
    line(f"{n_parts:,} parts: one latent's score history",
         *timed(lambda: parts_store.latent_results("scores", h, int(next(lat))), 5), "(target p95 < 50)")
    t0 = time.perf_counter()
    merged = compact_results(small, "scores", grace_s=0)
    print(f"  compact: {merged:,} parts merged in {time.perf_counter() - t0:.1f} s", flush=True)
    parts_store = RunStore(small)
    line("after compact: current_scores of a set", *timed(lambda: parts_store.current_scores(h), 3), "(target < 2000)")
    line("after compact: one latent's score history",
         *timed(lambda: parts_store.latent_results("scores", h, int(next(lat))), 5), "(target p95 < 50)")
    shutil.rmtree(small)
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--latents", type=int, default=131072, help="latents per set")
    ap.add_argument("--rows", type=int, default=1_002_000_000,
                    help="activation rows in all (a few hundred fewer: each latent's count is rounded down)")
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--dir", default="/tmp/autointerp-scale")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--parts", type=int, default=10_000, help="small result parts for the compaction figures")
    ap.add_argument("--write-only", action="store_true", help="write the run and stop")
    ap.add_argument("--finalise-k", type=int, default=12,
                    help="latents per token of the finalisation figure's SAE (0: skip that figure)")
    ap.add_argument("--finalise-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.finalise_child:
        folder, n_latents, n_tokens, k = args.finalise_child
        finalise_child(Path(folder), int(n_latents), int(n_tokens), int(k), n_parts=20)
        return
    print(cpu_line(), flush=True)
    run_dir = Path(args.dir) / f"scale-{args.sets}x{args.latents}-{args.rows}"
    make_run(run_dir, args.sets, args.latents, args.rows, args.tokens)
    info = json.loads((run_dir / "run.json").read_text())
    print(f"run {run_dir}: {info['n_rows']:,} activation rows, {args.sets * args.latents:,} latents, "
          f"{info['n_tokens']:,} tokens", flush=True)
    if not args.write_only:
        bench(run_dir, args.samples, args.parts)
        if args.finalise_k:
            finalise(Path(args.dir), args.latents, args.tokens, args.finalise_k)


if __name__ == "__main__":
    main()
