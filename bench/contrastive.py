"""Contrastive vs default explanations on the same latents (issue 23.2), paired.

    .venv/bin/python bench/contrastive.py --run demo --hookpoint resid_post.15 --latents 30 \
        --scorers detection embedding

The latents are the set's explained ones (a seeded choice of N when there are more); their stored
(default) explanation is compared with a contrastive one written now by the same model
(`--explainer contrastive`: the prompt also shows the 10 embedding-nearest silent windows). Both
are scored on one test set per latent that excludes every window either explainer saw. Printed per
scorer: mean of each [95% t] and the paired difference contrastive − default [95% t], with the
one-sided sign-flip p. Nothing is written to the run; the explanations go to --out (JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from llm_args import llm_bench_parser, seeded_subset  # noqa: E402

from autointerp.analysis.stats import sign_flip_p  # noqa: E402
from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.models.embedder import load_embedder  # noqa: E402
from autointerp.explain.explainers import ExplainConfig, explain_latents  # noqa: E402
from autointerp.runs.interpret import sampling_config, score_latent  # noqa: E402
from autointerp.llm import make_client  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.score.metrics import t_ci  # noqa: E402
from autointerp.store import RunStore, present, run_path  # noqa: E402
from autointerp.runs.validity import headline_value  # noqa: E402


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=30)
    ap.add_argument("--scorers", nargs="+", default=["detection", "embedding"])
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    store = RunStore(run_path(args.run))
    current = store.current_explanations(args.hookpoint)
    current = current[current.explainer.fillna("default") == "default"] if "explainer" in current else current
    latents = seeded_subset(current.latent, args.latents)
    rows = {int(r.latent): r for r in current.itertuples() if int(r.latent) in set(latents)}
    client = make_client(LLMConfig(backend=args.backend, model=args.model, batch_size=16))
    embedder = load_embedder()
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, scorers=args.scorers, model=args.model,
                          per_prompt=args.per_prompt)
    t0 = time.perf_counter()
    written = explain_latents(client, store, args.hookpoint, latents, sampling_config(cfg),
                              ExplainConfig(explainer="contrastive"))
    explain_s = (time.perf_counter() - t0) / len(latents)
    values: dict[tuple[str, str], dict[int, float]] = {}
    out = []
    t0 = time.perf_counter()
    for new in written:
        latent, old = new["latent"], rows[new["latent"]]
        out.append({"latent": latent, "default": old.explanation, "contrastive": new["explanation"],
                    "error": new["error"]})
        if not present(new["explanation"]):
            continue
        shown = sorted({tuple(k) for r in (old.shown, new["shown"]) if r for k in json.loads(r)})
        cache: dict = {}
        texts = (old.explanation, new["explanation"])
        for which, text in zip(("default", "contrastive"), texts):
            scores, _ = score_latent(client, store, args.hookpoint, latent, text, cfg, embedder, shown=shown,
                                     cache=cache, also=texts)
            for s in scores:
                if not s.get("error"):
                    values.setdefault((s["scorer"], which), {})[latent] = headline_value(s)
    score_s = (time.perf_counter() - t0) / len(latents)
    failed = sum(1 for r in out if not present(r["contrastive"]))
    print(f"run {args.run}, {args.hookpoint}, {len(latents)} latents ({failed} contrastive explanations failed), "
          f"{client.name}; {explain_s:.1f} s per contrastive explanation, {score_s:.1f} s per latent scoring both")
    print("| scorer | n | default, mean [95% t] | contrastive, mean [95% t] | contrastive − default [95% t] | p |")
    print("|---|---|---|---|---|---|")
    for scorer in args.scorers:
        a, b = values.get((scorer, "default"), {}), values.get((scorer, "contrastive"), {})
        both = sorted(set(a) & set(b))
        ma, la, ha = t_ci([a[x] for x in both])
        mb, lb, hb = t_ci([b[x] for x in both])
        d = np.array([b[x] - a[x] for x in both])
        md, ld, hd = t_ci(d)
        p = sign_flip_p(d) if len(d) else float("nan")
        print(f"| {scorer} | {len(both)} | {ma:.3f} [{la:.3f}, {ha:.3f}] | {mb:.3f} [{lb:.3f}, {hb:.3f}] | "
              f"{md:+.3f} [{ld:+.3f}, {hd:+.3f}] | {p:.3f} |")
    for r in out[:8]:
        print(f"  latent {r['latent']}: default {r['default']!r} | contrastive {r['contrastive']!r}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
