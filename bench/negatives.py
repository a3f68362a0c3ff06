"""How each scorer's AUROC changes with the kind of silent test windows (issue 23.3): random,
hard (embedding-nearest) and neighbours (top windows of the nearest latents by decoder cosine).

    .venv/bin/python bench/negatives.py --run demo --hookpoint resid_post.15 --latents 30 \
        --scorers detection embedding --negatives random neighbours hard

The latents are the set's explained ones (the first N by id, seeded choice when more); each is
scored with its current explanation once per kind of negatives, on the same activating windows
(the test set's activating half is seeded per latent, so only the silent half changes). Printed per
scorer and kind: mean AUROC [95% t], and the paired difference from random negatives [95% t] with
n. Nothing is written to the run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_args import llm_bench_parser, seeded_subset  # noqa: E402

from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.models.embedder import load_embedder  # noqa: E402
from autointerp.runs.interpret import explanation_dict, score_latent  # noqa: E402
from autointerp.llm import make_client  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.score.metrics import t_ci  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=30)
    ap.add_argument("--scorers", nargs="+", default=["detection", "embedding"])
    ap.add_argument("--negatives", nargs="+", default=["random", "neighbours", "hard"])
    args = ap.parse_args()
    store = RunStore(run_path(args.run))
    expl = explanation_dict(store.current_explanations(args.hookpoint))
    latents = seeded_subset(expl, args.latents)
    needs_llm = any(s != "embedding" for s in args.scorers)
    client = make_client(LLMConfig(backend=args.backend, model=args.model)) if needs_llm else None
    embedder = load_embedder()
    base = InterpretConfig(run=args.run, hookpoint=args.hookpoint, scorers=args.scorers, model=args.model,
                           per_prompt=args.per_prompt)
    auroc: dict[tuple[str, str], dict[int, float]] = {}
    seconds: dict[str, float] = {}
    for kind in args.negatives:
        cfg = dataclasses.replace(base, negatives=kind)
        t0 = time.perf_counter()
        for latent in latents:
            rows, _ = score_latent(client, store, args.hookpoint, latent, expl[latent], cfg, embedder)
            for r in rows:
                if not r.get("error") and r.get("auroc") is not None:
                    auroc.setdefault((r["scorer"], kind), {})[latent] = float(r["auroc"])
        seconds[kind] = (time.perf_counter() - t0) / len(latents)
        print(f"  {kind}: {seconds[kind]:.1f} s per latent", flush=True)
    print(f"\nrun {args.run}, {args.hookpoint}, {len(latents)} explained latents, scorer LLM {args.model}")
    print("| scorer | negatives | n | AUROC, mean [95% t] | − random negatives, paired [95% t] |")
    print("|---|---|---|---|---|")
    for scorer in args.scorers:
        ref = auroc.get((scorer, "random"), {})
        for kind in args.negatives:
            got = auroc.get((scorer, kind), {})
            m, lo, hi = t_ci(list(got.values()))
            both = sorted(set(got) & set(ref))
            if kind == "random" or not both:
                diff = "–"
            else:
                d, dlo, dhi = t_ci([got[x] - ref[x] for x in both])
                diff = f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}] (n {len(both)})"
            print(f"| {scorer} | {kind} | {len(got)} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {diff} |")


if __name__ == "__main__":
    main()
