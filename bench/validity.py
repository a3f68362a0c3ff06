"""Does a scorer measure anything? True explanation vs a random one (another latent's) on the
same test examples, per scorer, with a paired bootstrap 95% CI over latents.

    .venv/bin/python bench/validity.py [--model qwen1.5b] [--latents 10] [--per-prompt 5]
        [--scorers detection fuzzing embedding]

Latents: N random latents of the run's set active on at least 100 tokens (seeded). A scorer
measures something when AUROC(true) - AUROC(random) has a CI above 0.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_args import llm_bench_parser  # noqa: E402

import numpy as np  # noqa: E402

from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.embedding import load_embedder  # noqa: E402
from autointerp.explain import ExplainConfig, explain_latents  # noqa: E402
from autointerp.interpret import score_latent  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm.transformers_backend import TransformersClient  # noqa: E402
from autointerp.sampling import SamplingConfig  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402


def bootstrap_ci(diffs: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(n, len(diffs)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=10)
    ap.add_argument("--scorers", nargs="+", default=["detection", "fuzzing", "embedding"])
    args = ap.parse_args()
    t0 = time.time()
    store = RunStore(run_path(args.run))
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, scorers=args.scorers, per_prompt=args.per_prompt,
                          model=args.model)
    # random latents active on at least 100 tokens, so every decile has test windows
    active, _ = store.latent_table(args.hookpoint, min_frequency=100 / store.info["n_tokens"], limit=100_000)
    latents = np.random.default_rng(0).choice(active.latent.to_numpy(), args.latents, replace=False).tolist()
    client = TransformersClient(LLMConfig(model=args.model, batch_size=16))
    sampling = SamplingConfig(n_explain=cfg.n_explain, min_examples=cfg.min_examples)
    rows = explain_latents(client, store, args.hookpoint, latents, sampling, ExplainConfig())
    pairs = [(r["latent"], r["explanation"]) for r in rows if r["explanation"]]
    embedder = load_embedder()
    auroc = {s: {"true": [], "random": []} for s in args.scorers}
    for i, (latent, expl) in enumerate(pairs):
        other = pairs[(i + 1) % len(pairs)][1]
        for kind, text in (("true", expl), ("random", other)):
            scores, _ = score_latent(client, store, args.hookpoint, latent, text, cfg, embedder)
            for s in scores:
                auroc[s["scorer"]][kind].append(s["auroc"] if s["auroc"] is not None else np.nan)
        print(f"latent {latent}: {expl!r} (random: {other!r})", flush=True)
    print(f"\n{args.model}, {len(pairs)} latents of {args.hookpoint}, {args.per_prompt} examples per prompt, "
          f"{time.time() - t0:.0f} s")
    print(f"{'scorer':12s} {'AUROC true':>10s} {'AUROC random':>12s} {'diff':>6s}  95% CI (paired bootstrap)")
    for s, d in auroc.items():
        t, r = np.array(d["true"]), np.array(d["random"])
        ok = ~(np.isnan(t) | np.isnan(r))
        lo, hi = bootstrap_ci(t[ok] - r[ok])
        print(f"{s:12s} {np.mean(t[ok]):10.3f} {np.mean(r[ok]):12.3f} {np.mean(t[ok] - r[ok]):6.3f}  "
              f"[{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()
