"""Which sentence embedder makes the embedding scorer measure most? The same latents, the same
explanations and the same test sets scored with each embedder side by side (issue 20 B): per
embedder the mean AUROC of the latent's explanation and of a random one (another latent's), the
true - random gap with its t interval and sign-flip p-value over latents, the mean half-width of
one latent's 95 % interval (DeLong), and the cost per latent (encoding only; the load is printed
apart).

    .venv/bin/python bench/embedders.py [--run demo] [--hookpoint resid_post.15] [--latents 30]
        [--embedders minilm mpnet] [--test-per-quantile 2] [--n-negative 20]

Latents: the set's latents with a current explanation (any explainer), N of them at random
(seeded); the explanations are not redone here. The test set of a latent is seeded per latent and
drawn with random negatives, so it is identical for every embedder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from autointerp.analysis.stats import sign_flip_p, t_ci  # noqa: E402
from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.models.embedder import embedder_name, load_embedder  # noqa: E402
from autointerp.runs.interpret import explanation_dict, score_latent  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402
from autointerp.runs.validity import random_explanations, verdict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="demo")
    ap.add_argument("--hookpoint", default="resid_post.15")
    ap.add_argument("--latents", type=int, default=30)
    ap.add_argument("--embedders", nargs="+", default=["minilm", "mpnet"])
    ap.add_argument("--test-per-quantile", type=int, default=2)
    ap.add_argument("--n-negative", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    store = RunStore(run_path(args.run))
    expl = explanation_dict(store.current_explanations(args.hookpoint))
    rng = np.random.default_rng(args.seed)
    chosen = sorted(int(x) for x in rng.permutation(sorted(expl))[: args.latents])
    expl = {x: expl[x] for x in chosen}
    others = random_explanations(expl, args.seed)
    print(f"{len(expl)} latents of {args.hookpoint} in run {args.run!r} with a current explanation; test sets: "
          f"{args.test_per_quantile} per decile + {args.n_negative} random silent windows", flush=True)
    rows = []
    gaps: dict[str, np.ndarray] = {}  # per latent, true - random AUROC (every embedder scores the same latents)
    for spec in args.embedders:
        t = time.perf_counter()
        embedder = load_embedder(spec)
        embedder.encode(["warm-up"])
        load_s = time.perf_counter() - t
        cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, scorers=["embedding"], embedder=spec,
                              test_per_quantile=args.test_per_quantile, n_negative=args.n_negative)
        true, rand, half = [], [], []
        t = time.perf_counter()
        for latent in expl:
            got = {}
            for which, text in (("true", expl[latent]), ("random", others[latent])):
                [s], _ = score_latent(None, store, args.hookpoint, latent, text, cfg, embedder)
                got[which] = s
            if got["true"].get("auroc") is None or got["random"].get("auroc") is None:
                continue
            true.append(got["true"]["auroc"])
            rand.append(got["random"]["auroc"])
            half.append((got["true"]["auroc_hi"] - got["true"]["auroc_lo"]) / 2)
        per_latent = (time.perf_counter() - t) / max(1, len(expl))
        d = np.array(true) - np.array(rand)
        gaps[spec] = d
        mean, lo, hi = t_ci(d)
        word, p = verdict(d, len(d))
        rows.append((embedder_name(spec), len(d), np.mean(true), np.mean(rand), mean, lo, hi, p, word,
                     float(np.mean(half)), per_latent, load_s))
    print("\n| embedder | n | true | random | true - random [95% t] | p (sign-flip) | verdict | "
          "one latent's 95% half-width | s / latent (2 explanations) | load s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, tr, ra, mean, lo, hi, p, word, half, per_latent, load_s in rows:
        print(f"| {name} | {n} | {tr:.3f} | {ra:.3f} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] | {p:.4f} | {word} | "
              f"±{half:.3f} | {per_latent:.2f} | {load_s:.1f} |")
    # does an embedder beat the first? paired over latents: its gap minus the first's gap
    first = args.embedders[0]
    for spec in args.embedders[1:]:
        if len(gaps[spec]) != len(gaps[first]):
            continue  # a latent scored by one embedder and not the other: no pairing
        diff = gaps[spec] - gaps[first]
        mean, lo, hi = t_ci(diff)
        print(f"\n{embedder_name(spec)} gap - {embedder_name(first)} gap, paired over {len(diff)} latents: "
              f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (95% t), one-sided sign-flip p {sign_flip_p(diff):.4f}")


if __name__ == "__main__":
    main()
