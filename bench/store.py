"""Latency of the latent-page queries on the demo run and on a synthetic run of >= 100M rows.

    .venv/bin/python bench/store.py [--rows 100000000] [--synthetic-dir /tmp/autointerp-synthetic]

The synthetic run is written once (sorted by latent, value desc, like a real finalized run; latent
frequencies log-uniform over four decades) and reused. Prints p50/p95 in ms per query (target p95
< 50 ms), over --samples latents drawn at random (a fixed seed), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from autointerp.core.atomic import atomic_write_json  # noqa: E402
from autointerp.store import (ACT_SCHEMA, ROW_GROUP_ROWS, RunStore, run_path,  # noqa: E402
                              write_latent_stats, write_parquet_atomic)


def write_sorted_acts(set_dir: Path, counts: np.ndarray, n_tokens: int, ctx_len: int,
                      rng: np.random.Generator) -> int:
    """A set's acts.parquet as a finalized run has it, latent by latent (sorted by latent, value
    desc) through a streaming writer: memory stays one ~400k-row buffer whatever the size. Each
    latent fires on exactly `counts[latent]` distinct random tokens; returns the rows written."""
    set_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with pq.ParquetWriter(set_dir / ".acts.parquet.partial", ACT_SCHEMA, compression="zstd") as writer:
        buf, buffered = [], 0
        for latent, c in enumerate(counts):
            if c:
                tok = rng.choice(n_tokens, c, replace=False) if c < n_tokens // 4 else rng.permutation(n_tokens)[:c]
                values = np.sort(rng.exponential(1.0, tok.size).astype(np.float32))[::-1]
                buf.append(pa.table([pa.array(np.full(tok.size, latent, np.int32)),
                                     pa.array((tok // ctx_len).astype(np.int32)),
                                     pa.array((tok % ctx_len + 1).astype(np.int16)), pa.array(values)],
                                    schema=ACT_SCHEMA))
                buffered += tok.size
            if buffered >= 4 * ROW_GROUP_ROWS or (latent == len(counts) - 1 and buf):
                writer.write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP_ROWS)
                written += buffered
                buf, buffered = [], 0
    os.replace(set_dir / ".acts.parquet.partial", set_dir / "acts.parquet")
    write_latent_stats(set_dir, len(counts), n_tokens)
    return written


def write_run_files(run_dir: Path, n_ctx: int, ctx_len: int, rng: np.random.Generator, info: dict,
                    vocab: int = 49152) -> None:
    """A synthetic run's token files (random ids) and, last, its run.json (`info` plus the sizes)."""
    tokens = rng.integers(0, vocab, size=(n_ctx, ctx_len + 1), dtype=np.int32)
    np.save(run_dir / "tokens.npy", tokens)
    write_parquet_atomic(pa.table({"doc_id": np.repeat(np.arange(n_ctx, dtype=np.int32), ctx_len + 1),
                                   "pos": np.tile(np.arange(ctx_len + 1, dtype=np.int16), n_ctx),
                                   "token_id": tokens.reshape(-1)}), run_dir / "tokens.parquet")
    ids = np.arange(vocab, dtype=np.int32)
    write_parquet_atomic(pa.table({"token_id": ids, "token": [f" t{i}" for i in ids]}), run_dir / "token_strings.parquet")
    atomic_write_json(run_dir / "run.json", {"name": run_dir.name, "model": "synthetic", "n_tokens": n_ctx * ctx_len,
                                             "n_contexts": n_ctx, "ctx_len": ctx_len, "window": 32,
                                             "status": "complete", **info})


def make_synthetic(run_dir: Path, n_rows: int, n_latents: int = 16384, ctx_len: int = 64) -> None:
    """One set, frequencies log-uniform over four decades, n_rows // 32 tokens (k = 32)."""
    if (run_dir / "run.json").exists():
        return
    rng = np.random.default_rng(0)
    n_ctx = n_rows // 32 // ctx_len
    n_tokens = n_ctx * ctx_len
    freq = np.exp(rng.uniform(np.log(1e-4), np.log(1e-0), n_latents))
    counts = np.minimum(np.floor(freq / freq.sum() * n_rows).astype(np.int64), n_tokens)
    print(f"writing synthetic run: ~{counts.sum():,} rows, {n_latents} latents, {n_tokens:,} tokens", flush=True)
    written = write_sorted_acts(run_dir / "acts" / "resid_post.15", counts, n_tokens, ctx_len, rng)
    write_run_files(run_dir, n_ctx, ctx_len, rng, {"n_rows": written})


QUERIES = {
    "latent_table page": lambda s, h, l, rng: s.latent_table(h, sort="frequency", limit=50,
                                                               offset=int(rng.integers(0, 200)) * 50),
    "latent_stats+histogram": lambda s, h, l, rng: s.histogram(h, l),
    "top_examples(20)": lambda s, h, l, rng: s.top_examples(h, l, 20),
    "quantile_examples(10x4)": lambda s, h, l, rng: s.quantile_examples(h, l, 10, 4),
    "random_examples(20)": lambda s, h, l, rng: s.random_examples(h, l, 20),
    "non_activating(20)": lambda s, h, l, rng: s.non_activating_examples(h, l, 20),
}


def bench_run(store: RunStore, hookpoint: str, samples: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    n_lat = store.n_latents(hookpoint)
    latents = rng.integers(0, n_lat, samples + 5)
    _ = store.tokens, store.token_strings
    times: dict[str, list[float]] = {q: [] for q in QUERIES}
    times["whole latent page"] = []
    for i, latent in enumerate(latents):
        page = 0.0
        for name, fn in QUERIES.items():
            t0 = time.perf_counter()
            fn(store, hookpoint, int(latent), rng)
            dt = (time.perf_counter() - t0) * 1000
            page += dt if name != "latent_table page" else 0
            if i >= 5:
                times[name].append(dt)
        if i >= 5:
            times["whole latent page"].append(page)
    return {q: (float(np.percentile(t, 50)), float(np.percentile(t, 95))) for q, t in times.items()}


def report(title: str, res: dict[str, tuple[float, float]]) -> None:
    print(title)
    for q, (p50, p95) in res.items():
        print(f"  {q:26s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")


def run_bench_parser(doc: str) -> argparse.ArgumentParser:
    """Flags shared with bench/app.py: the demo run and the synthetic >= 100M-row run."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--synthetic-dir", default="/tmp/autointerp-synthetic")
    ap.add_argument("--demo-run", default="demo")
    return ap


def main() -> None:
    args = run_bench_parser(__doc__).parse_args()
    demo = run_path(args.demo_run)
    if (demo / "run.json").exists():
        store = RunStore(demo)
        info = json.loads((demo / "run.json").read_text())
        sets = store.hookpoints()
        for h in (["resid_post.15"] if "resid_post.15" in sets else sets[:1]):
            report(f"demo run ({info['n_tokens']:,} tokens), latent set {h}:", bench_run(store, h, args.samples))
    else:
        print(f"(no demo run at {demo}: run `autointerp demo` to include it)")
    syn = Path(args.synthetic_dir)
    t0 = time.time()
    make_synthetic(syn, args.rows)
    info = json.loads((syn / "run.json").read_text())
    if time.time() - t0 > 1:
        print(f"  (written in {time.time() - t0:.0f} s)")
    store = RunStore(syn)
    report(f"synthetic run ({info['n_rows']:,} activation rows, {info['n_tokens']:,} tokens):",
           bench_run(store, "resid_post.15", args.samples))


if __name__ == "__main__":
    main()
