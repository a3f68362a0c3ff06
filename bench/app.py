"""Server-side time to build the app's page data: the Latent page (views.latent_page: stats,
histogram, 20 top examples, 10x2 quantile examples, explanation and score history) and the
Browse page (views.latent_frame + filter + one sorted page), on the demo run and on a synthetic
run of >= 100M activation rows (written once by bench/store.py's generator; explanations and
scores for every latent are added once so the result joins are exercised). Target: p95 < 100 ms.

    .venv/bin/python bench/app.py [--samples 100] [--synthetic-dir /tmp/autointerp-synthetic]
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from store import make_synthetic, run_bench_parser  # noqa: E402

from autointerp.app import views  # noqa: E402
from autointerp.store import RunStore, append_results, run_path  # noqa: E402


def add_synthetic_results(store: RunStore, hookpoint: str) -> None:
    """One explanation and detection/embedding scores per latent, once (results are append-only)."""
    if len(store.explanations(hookpoint)):
        return
    rng = np.random.default_rng(0)
    n = store.n_latents(hookpoint)
    append_results(store.run_dir, "explanations", [
        {"hookpoint": hookpoint, "latent": i, "explanation": f"synthetic explanation {i}", "model": "synthetic"}
        for i in range(n)])
    append_results(store.run_dir, "scores", [
        {"score_id": uuid.uuid4().hex, "hookpoint": hookpoint, "latent": i, "scorer": s,
         "explanation": f"synthetic explanation {i}", "auroc": float(rng.random()), "n": 50, "n_failed": 0,
         "accuracy_per_decile": "{}", "correlation_per_quantile": "{}"}
        for i in range(n) for s in ("detection", "embedding")])


def timed(fn, n: int, warmup: int = 3) -> tuple[float, float]:
    times = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        fn(i)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def bench(store: RunStore, hookpoint: str, samples: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    active, _ = store.latent_table(hookpoint, min_frequency=1e-9, limit=store.n_latents(hookpoint))
    latents = rng.choice(active.latent.to_numpy(), samples + 3).tolist()
    _ = store.tokens, store.token_strings
    out = {"latent page data": timed(lambda i: views.latent_page(store, hookpoint, int(latents[i])), samples)}
    frame = views.latent_frame(store, hookpoint)
    out["browse: latent frame"] = timed(lambda i: views.latent_frame(store, hookpoint), max(10, samples // 10))
    f = views.BrowseFilter(text="1", min_frequency=1e-4)
    out["browse: filter + page"] = timed(
        lambda i: views.page_of(views.filter_latents(frame, f), "detection" if "detection" in frame else "frequency",
                                True, 1 + i % 5, 50), samples)
    return out


def report(title: str, res: dict[str, tuple[float, float]]) -> None:
    print(title)
    for q, (p50, p95) in res.items():
        flag = "" if q != "latent page data" else ("  (target p95 < 100 ms: met)" if p95 < 100 else
                                                  "  (target p95 < 100 ms: NOT met)")
        print(f"  {q:24s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{flag}")


def main() -> None:
    args = run_bench_parser(__doc__).parse_args()
    demo = run_path(args.demo_run)
    if (demo / "run.json").exists():
        store = RunStore(demo)
        report(f"demo run ({store.info['n_tokens']:,} tokens), resid_post.15:", bench(store, "resid_post.15",
                                                                                   args.samples))
    syn = Path(args.synthetic_dir)
    make_synthetic(syn, args.rows)
    store = RunStore(syn)
    add_synthetic_results(store, "resid_post.15")
    info = json.loads((syn / "run.json").read_text())
    report(f"synthetic run ({info['n_rows']:,} activation rows, {store.n_latents('resid_post.15'):,} latents):",
           bench(store, "resid_post.15", args.samples))


if __name__ == "__main__":
    main()
