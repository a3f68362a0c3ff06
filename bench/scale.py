"""The store, the search and the app at the paper's scale: a synthetic run of >= 1M latents and
>= 1B activation rows, with explanations and scores for every latent, measured beside a 100M-row run
(bench/store.py's size) in one go and printed side by side.

    .venv/bin/python bench/scale.py [--sets 8] [--latents 131072] [--rows 1002000000] [--tokens 10000000]
        [--compare-rows 100000000 --compare-sets 1 --compare-latents 16384] [--dir /tmp/autointerp-scale]
        [--samples 50] [--parts 10000] [--queries 100] [--app-starts 3] [--finalise-k 12]
        [--sections store search app finalise]

Each run is written once and reused (delete --dir to rebuild); before writing, the free disk is
checked against an estimate (one-line error if short). Each latent set is written latent by latent
in sorted order (latent, value desc) through bench/store.py's streaming writer, so memory stays
bounded (one buffer of ~400k rows) whatever the size; frequencies are log-uniform over five decades with
a few very dense latents. Explanations (synthetic text) and detection + fuzzing scores go in one
results part per set, compacted first (what `autointerp compact` leaves a campaign). Per run
(p50 / p95 ms over --samples latents): each store query of the Latent page and the whole page's
data (views.latent_page), Browse's first page / a sort by a score / a switch of set
(views.latent_frame, page_of) and its filters, the Scores page's table, correlations and whole
page (figures included) over every scored latent, scorer agreement, the Overview's set summary,
the results queries with --parts small parts before and after `compact`; the explanation search over every set (search_bench: index built once, a part added,
queries, recall@10 against exact); the app in headless Chromium (server start to the Overview drawn,
the server's RSS); the bench's peak RSS; and, for the big run, the cache's finalisation of one
--latents SAE over --tokens tokens (--finalise-k latents per token) in a child process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import time
import zlib
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


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: in a child started by subprocess (vfork +
    exec) that also counts the parent's peak (Linux carries the old memory's high-water mark into
    the exec'd process), which made the finaliser look as big as the whole bench."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    publish_latent_set(folder, "sae", n_latents, n_ctx, CTX_LEN, spans)
    print(json.dumps({"rows": n_ctx * CTX_LEN * k, "parts_written_s": written, "finalise_s": time.perf_counter() - t0,
                      "peak_rss_mb_before": rss_before,
                      "peak_rss_mb": peak_rss_mb(),
                      "acts_gb": (folder / "acts" / "sae" / "acts.parquet").stat().st_size / 1e9}), flush=True)


def finalise(dir_: Path, n_latents: int, n_tokens: int, k: int, fig: Figures) -> None:
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
          f"parts written in {r['parts_written_s']:.0f} s; acts.parquet {r['acts_gb']:.1f} GB", flush=True)
    fig.value("cache finalisation of one SAE (sort + latents.parquet)", f"{r['finalise_s']:.0f} s")
    fig.value("cache finalisation peak RSS (parts alone)", f"{r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb_before']:.0f} MB)")


def timed(fn, reps: int) -> tuple[float, float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


class Figures:
    """One run's figures in the order measured (label -> text, target): each printed as it lands,
    all of them side by side with another run's at the end (side_by_side)."""

    def __init__(self, title: str):
        self.title, self.rows = title, {}

    def add(self, label: str, p50: float, p95: float, target: str = "") -> None:
        self.value(label, f"p50 {p50:8.1f} / p95 {p95:8.1f} ms", target)

    def value(self, label: str, text: str, target: str = "") -> None:
        self.rows[label] = (text, target)
        print(f"  {label:52s} {text:32s} {target}", flush=True)


def side_by_side(runs: list[Figures]) -> None:
    labels = list(dict.fromkeys(label for f in runs for label in f.rows))
    print("\n" + " | ".join([f"{'figure':52s}", *(f"{f.title:32s}" for f in runs), "target"]))
    for label in labels:
        cells = [f.rows.get(label, ("-", ""))[0] for f in runs]
        target = next((f.rows[label][1] for f in runs if label in f.rows), "")
        print(" | ".join([f"{label:52s}", *(f"{c:32s}" for c in cells), target]))


def bench(run_dir: Path, samples: int, n_parts: int, fig: Figures) -> None:
    from autointerp import analysis
    from autointerp.analysis import agreement
    from autointerp.app import figures, views
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
    fig.value("open the run (RunStore, tokens)", f"{(time.perf_counter() - t0) * 1000:.0f} ms")
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
        fig.add(name, float(np.percentile(t, 50)), float(np.percentile(t, 95)), "(target p95 < 50)")
    it = iter(latents[3:])
    fig.add("whole Latent page data (views.latent_page)", *timed(lambda: views.latent_page(store, h, int(next(it))),
                                                              samples), "(target p95 < 100)")
    fig.add("Browse: latent_frame of a set (first page)", *timed(lambda: views.latent_frame(store, h), 3),
         "(first page, target < 1000)")
    frame = views.latent_frame(store, h)
    score_col = next(c for c in frame.columns if c in ("detection", "fuzzing"))
    fig.add(f"Browse: sort by {score_col}, page 1", *timed(lambda: views.page_of(frame, score_col, True, 0, 50), 5),
         "(target < 1000)")
    fig.add(f"Browse: filter {score_col} in [0.7, 1], page 1",
            *timed(lambda: views.page_of(views.filter_latents(frame, views.BrowseFilter(
                score_ranges={score_col: (0.7, 1.0)})), score_col, True, 1, 50), 5), "(target < 1000)")
    fig.add("Browse: filter frequency > 1e-4, sort by frequency",
            *timed(lambda: views.page_of(views.filter_latents(frame, views.BrowseFilter(min_frequency=1e-4)),
                                         "frequency", True, 1, 50), 5), "(target < 1000)")
    fig.add("Browse: switch set (latent_frame of another)",
         *timed(lambda: views.latent_frame(store, sets[int(rng.integers(1, len(sets)))] if len(sets) > 1 else h), 3),
         "(target < 1000)")
    fig.add("Overview: set summary", *timed(lambda: views.set_summary(store), 3), "(first paint target < 5000)")
    table = analysis.score_table(store)
    fig.value("scored latents", f"{len(table):,}")
    fig.add("Scores: score table over every scored latent", *timed(lambda: analysis.score_table(store), 3),
         "(target < 2000)")
    fig.add("Scores: scorer correlations", *timed(lambda: analysis.scorer_correlations(table), 3), "(target < 2000)")

    def scores_page() -> None:  # what pages/3_Scores.py computes for "all" sets, figures included
        t = analysis.score_table(store)
        analysis.scorer_correlations(t)
        analysis.accuracy_per_decile(store)
        analysis.intervention_by_kl(store)
        analysis.intervention_vs_fuzzing(t)
        figures.score_distributions(t).to_json()

    fig.add("Scores: the whole page's data and figures, all sets", *timed(scores_page, 3), "(target < 2000)")
    fig.add("Analyses: scorer agreement (rho + CI per pair)", *timed(lambda: agreement.agreement_table(store), 3),
            "(target < 2000)")
    fig.value("bench process peak RSS after the app queries", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

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
    fig.add("10k parts: current_scores of a set", *timed(lambda: parts_store.current_scores(h), 3), "(target < 2000)")
    fig.add("10k parts: one latent's score history",
         *timed(lambda: parts_store.latent_results("scores", h, int(next(lat))), 5), "(target p95 < 50)")
    t0 = time.perf_counter()
    merged = compact_results(small, "scores", grace_s=0)
    fig.value("10k parts: compact", f"{merged:,} parts in {time.perf_counter() - t0:.1f} s")
    parts_store = RunStore(small)
    fig.add("after compact: current_scores of a set", *timed(lambda: parts_store.current_scores(h), 3), "(target < 2000)")
    fig.add("after compact: one latent's score history",
         *timed(lambda: parts_store.latent_results("scores", h, int(next(lat))), 5), "(target p95 < 50)")
    shutil.rmtree(small)
    fig.value("bench process peak RSS so far (both runs share it)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


SECTIONS = ("store", "search", "app", "finalise")
POOL = 20_000  # distinct corpus phrases whose MiniLM embeddings the synthetic explanations' vectors mix


def corpus_phrases(n: int, rng: np.random.Generator, avoid: set[str] = frozenset()) -> list[str]:
    """n distinct 3-7 word spans of the offline Wikipedia corpus (explanation-sized real text)."""
    from autointerp.models.corpus import load_texts

    docs = [t.split() for t in load_texts("wiki")]
    out: dict[str, None] = {}
    while len(out) < n:
        words = docs[int(rng.integers(len(docs)))]
        width = int(rng.integers(3, 8))
        if len(words) > width:
            at = int(rng.integers(len(words) - width))
            phrase = " ".join(words[at:at + width])
            if phrase not in avoid:
                out[phrase] = None
    return list(out)


def search_bench(run_dir: Path, store: RunStore, fig: Figures, n_queries: int, rng: np.random.Generator,
                 pool_size: int = POOL) -> None:
    """The explanation search at this run's size. Embedding a million texts with MiniLM takes this
    machine ~half an hour (the rate is printed), so each latent's vector is a real MiniLM geometry
    made cheaply: the normalised mix of two embeddings of real corpus phrases (weights 0.5-0.9),
    indexed under the md5 of the latent's stored explanation, so the app sees its index current.
    Queries are other real phrases embedded by MiniLM; recall@10 is against exact search."""
    from autointerp.app.semantic_search import ExplanationSearch
    from autointerp.explain.search_index import INDEX_EMBEDDER
    from autointerp.models.embedder import embedder_name, load_embedder
    from autointerp.store.search_index import SearchIndexes, add_to_index

    embedder, name = load_embedder(INDEX_EMBEDDER), embedder_name(INDEX_EMBEDDER)
    sets = store.hookpoints()
    pool_texts = corpus_phrases(pool_size, np.random.default_rng(3))
    n_rate = min(2000, pool_size)
    t0 = time.perf_counter()
    sample = embedder.encode(pool_texts[:n_rate], normalize_embeddings=True, batch_size=64)
    rate = n_rate / (time.perf_counter() - t0)
    fig.value("MiniLM embedding rate (explanation-sized texts)", f"{rate:.0f} texts/s",
              f"(1M texts: {1e6 / rate / 60:.0f} min, spread over a campaign)")
    rest = pool_texts[n_rate:]
    pool = np.concatenate([sample, embedder.encode(rest, normalize_embeddings=True, batch_size=64)]) if rest else sample
    indexes = SearchIndexes(run_dir)
    built = 0.0
    for hp in sets:
        todo = store.unindexed_explanations(hp, name)
        if not len(todo):
            continue
        mix = np.random.default_rng(zlib.crc32(hp.encode()))  # the same vectors in every process
        a, b = mix.integers(0, pool_size, len(todo)), mix.integers(0, pool_size, len(todo))
        w = mix.uniform(0.5, 0.9, (len(todo), 1)).astype(np.float32)
        vectors = w * pool[a] + (1 - w) * pool[b]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        t0 = time.perf_counter()
        add_to_index(run_dir, hp, todo.latent.to_numpy(), todo.text_md5.tolist(), vectors, name)
        built += time.perf_counter() - t0
        print(f"    indexed {hp}: {len(todo):,} vectors in {time.perf_counter() - t0:.0f} s", flush=True)
    n_indexed = sum(indexes.size(hp) for hp in sets)
    fig.value("explanations in the search index", f"{n_indexed:,}" + (f" (built in {built:.0f} s)" if built else ""))
    # a part of 16 re-explained latents landing in a full set's index (what an explain job does)
    part = store.current_explanations(sets[0], columns=["explanation"], latents=list(range(16)))
    md5s = [hashlib.md5(t.encode()).hexdigest() for t in part.explanation]
    fig.add("search index: add a 16-latent part to a full set",
            *timed(lambda: add_to_index(run_dir, sets[0], part.latent.to_numpy(), md5s, pool[:16], name), 3))
    search = ExplanationSearch(store, embedder)
    t0 = time.perf_counter()
    search.catch_up(sets)
    fig.value("search: check every set's index is current (once per new part)",
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    queries = corpus_phrases(n_queries + 3, rng, avoid=set(pool_texts))
    it = iter(queries)
    fig.add("search every set, k=10 (query embedding + ANN + texts)",
            *timed(lambda: search.search(next(it), sets, k=10), n_queries + 3), "(target < 200)")
    recalls, exact_ms = [], []
    for q in queries[:min(50, n_queries)]:
        ann = search.search(q, sets, k=10)
        t0 = time.perf_counter()
        exact = search.search(q, sets, k=10, exact=True)
        exact_ms.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(set(zip(ann.hookpoint, ann.latent)) & set(zip(exact.hookpoint, exact.latent))) / 10)
    fig.value("search recall@10 against exact search", f"{np.mean(recalls):.3f} (min {np.min(recalls):.1f}, "
              f"{len(recalls)} queries)", "(target >= 0.95)")
    fig.add("exact search every set, k=10 (the reference)", float(np.percentile(exact_ms, 50)),
            float(np.percentile(exact_ms, 95)))


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def app_bench(run_dir: Path, fig: Figures, starts: int = 3, port: int = 8599) -> None:
    """`streamlit run app.py` (as `make app` starts it) on a data folder holding only this run, in
    headless Chromium: from the server's start to the Overview's set table and counts drawn,
    `starts` times; then the server's RSS after the Overview, a Browse page and a Latent page, and
    its peak (VmHWM)."""
    import subprocess
    import urllib.request

    import psutil
    from playwright.sync_api import sync_playwright

    root = Path(__file__).resolve().parent.parent
    data = run_dir.parent / f"app-data-{run_dir.name}"
    (data / "runs").mkdir(parents=True, exist_ok=True)
    link = data / "runs" / run_dir.name
    if not link.exists():
        link.symlink_to(run_dir)
    env = {**os.environ, "AUTOINTERP_DATA": str(data), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(root / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    url = f"http://127.0.0.1:{port}"
    paint, whole, rss = [], [], {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for rep in range(starts):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                while True:  # a bench, not a test: polling the server's health endpoint is fine here
                    try:
                        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                            if r.read().strip() == b"ok":
                                break
                    except OSError:
                        time.sleep(0.05)
                page.goto(url)
                page.get_by_text("latents explained").wait_for(timeout=120_000)
                paint.append((time.perf_counter() - t0) * 1000)
                page.get_by_text("Explained and scored by").wait_for(timeout=120_000)
                whole.append((time.perf_counter() - t0) * 1000)
                if rep == 0:
                    server = psutil.Process(proc.pid)
                    rss["Overview"] = server.memory_info().rss
                    page.goto(f"{url}/Browse")
                    page.get_by_text("latents match.").wait_for(timeout=120_000)
                    rss["Browse"] = server.memory_info().rss
                    page.goto(f"{url}/Latent?latent=12345")
                    page.get_by_text("Re-explain / rescore this latent").wait_for(timeout=120_000)
                    rss["Latent"] = server.memory_info().rss
                    hwm = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                               if line.startswith("VmHWM"))
                    rss["peak"] = int(hwm.split()[1]) * 1024
            finally:
                page.close()
                proc.terminate()
                proc.wait(timeout=30)
        browser.close()
    fig.add("app: server start -> Overview table and counts drawn", float(np.percentile(paint, 50)),
            float(np.percentile(paint, 95)), "(target < 5000)")
    fig.add("app: server start -> whole Overview drawn", float(np.percentile(whole, 50)), float(np.percentile(whole, 95)))
    fig.value("app server RSS after Overview / Browse / Latent",
              " / ".join(f"{rss[k] / 2**20:.0f}" for k in ("Overview", "Browse", "Latent")) + " MB")
    fig.value("app server peak RSS (VmHWM)", f"{rss['peak'] / 2**20:.0f} MB")


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
    ap.add_argument("--compare-rows", type=int, default=100_000_000,
                    help="rows of the smaller run measured beside it (bench/store.py's size; 0: none)")
    ap.add_argument("--compare-sets", type=int, default=1)
    ap.add_argument("--compare-latents", type=int, default=16_384)
    ap.add_argument("--queries", type=int, default=100, help="semantic search queries timed")
    ap.add_argument("--app-starts", type=int, default=3, help="app starts timed in Chromium (0: none)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                    help="what to measure on each run (all by default)")
    ap.add_argument("--finalise-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.finalise_child:
        folder, n_latents, n_tokens, k = args.finalise_child
        finalise_child(Path(folder), int(n_latents), int(n_tokens), int(k), n_parts=20)
        return
    print(cpu_line(), flush=True)
    shapes = [(args.compare_sets, args.compare_latents, args.compare_rows)] if args.compare_rows else []
    shapes.append((args.sets, args.latents, args.rows))
    runs = []
    for sets, latents, rows in shapes:
        run_dir = Path(args.dir) / f"scale-{sets}x{latents}-{rows}"
        make_run(run_dir, sets, latents, rows, args.tokens)
        info = json.loads((run_dir / "run.json").read_text())
        title = f"{info['n_rows'] / 1e6:,.0f}M rows, {sets * latents:,} latents"
        print(f"\nrun {run_dir}: {info['n_rows']:,} activation rows, {sets} sets x {latents:,} latents, "
              f"{info['n_tokens']:,} tokens", flush=True)
        if args.write_only:
            continue
        fig = Figures(title)
        if "store" in args.sections:
            bench(run_dir, args.samples, args.parts, fig)
        if "search" in args.sections:
            search_bench(run_dir, RunStore(run_dir), fig, args.queries, np.random.default_rng(4))
        if "app" in args.sections and args.app_starts:
            app_bench(run_dir, fig, args.app_starts)
        if "finalise" in args.sections and args.finalise_k and (sets, latents, rows) == shapes[-1]:
            finalise(Path(args.dir), args.latents, args.tokens, args.finalise_k, fig)
        runs.append(fig)
    if runs:
        side_by_side(runs)

if __name__ == "__main__":
    main()
