"""Does a scorer measure anything? For N random latents: the latent's explanation, a random one
(another latent's) and the neutral one, scored on the same test examples, per scorer; paired
bootstrap 95% CI over latents of true - random. Detection and fuzzing are read out both calibrated
(logit P(Yes | explanation) - logit P(Yes | neutral)) and uncalibrated (P(Yes | explanation))
from the same forward passes, so the two are compared on identical prompts.

    .venv/bin/python bench/validity.py [--model qwen1.5b] [--latents 30] [--per-prompt 5]
        [--scorers detection fuzzing embedding surprisal simulation] [--explainer MODEL] [--out results.json]

Latents: N random latents of the set with enough activating windows to explain and test (seeded);
explained first when they have no explanation yet (stored in the run like `autointerp explain`).
Also printed: seconds per scored example per scorer, and the per-latent standard error of AUROC
at this test-set size (bootstrap over the latent's test examples).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_args import llm_bench_parser  # noqa: E402

import numpy as np  # noqa: E402

from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.models.embedder import load_embedder  # noqa: E402
from autointerp.explain.explainers import ExplainConfig, explain_latents  # noqa: E402
from autointerp.runs.interpret import sampling_config, run_explain, score_latent, select_latents  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm import make_client  # noqa: E402
from autointerp.analysis.stats import t_ci  # noqa: E402
from autointerp.score.metrics import auroc  # noqa: E402
from autointerp.runs.validity import verdict  # noqa: E402
from autointerp.explain.prompts import NEUTRAL_EXPLANATION  # noqa: E402
from autointerp.store import RunStore, present, run_path  # noqa: E402
from autointerp.runs.validity import headline_value, random_explanations  # noqa: E402


def auroc_se(labels: np.ndarray, values: np.ndarray, n_boot: int = 300, seed: int = 0) -> float:
    """Bootstrap standard error of one latent's AUROC over its test examples."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        a = auroc(labels[idx], values[idx])
        if a is not None:
            out.append(a)
    return float(np.std(out)) if out else float("nan")


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=30)
    ap.add_argument("--scorers", nargs="+", default=["detection", "fuzzing", "embedding", "surprisal", "simulation"])
    ap.add_argument("--out", default="", help="write the per-latent values as JSON here")
    ap.add_argument("--explainer", default="", help="model whose explanations are scored (default: --model)")
    ap.add_argument("--cost-latents", type=int, default=3, help="latents the cost is timed on")
    args = ap.parse_args()
    t0 = time.time()
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, scorers=args.scorers, per_prompt=args.per_prompt,
                          model=args.model, random=args.latents, calibrate=True, batch_size=16)
    store = RunStore(run_path(args.run))
    latents = select_latents(store, cfg)
    client = make_client(LLMConfig(backend=args.backend, model=args.model, batch_size=16))
    explainer_model = args.explainer or args.model
    explainer = client if explainer_model == args.model and args.backend == "transformers" else None
    t_explain = time.time()
    # explanations by the explainer (--explainer, default the scorer; made with the transformers
    # backend, the reference): the others are redone
    name = f"transformers:{explainer_model}"
    have = {int(r.latent) for r in store.explanations(args.hookpoint, model=name).itertuples()
            if present(r.explanation)}
    todo = [x for x in latents if x not in have]
    if todo:
        explainer = explainer or make_client(LLMConfig(model=explainer_model, batch_size=16))
        run_explain(InterpretConfig(**{**cfg.__dict__, "random": 0, "latents": todo, "force": True}), client=explainer)
    t_explain = time.time() - t_explain
    expl = {int(r.latent): r.explanation for r in store.explanations(args.hookpoint, model=name).itertuples()
            if present(r.explanation) and int(r.latent) in set(latents)}
    others = random_explanations(expl, cfg.seed)
    embedder = load_embedder()
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[tuple[str, bool], list[float]] = defaultdict(list)
    n_examples: dict[tuple[str, bool], int] = defaultdict(int)
    ses: dict[str, list[float]] = defaultdict(list)
    per_latent = []
    for latent in sorted(expl):
        # the three explanations share every detection/fuzzing pass (see run_validate)
        cache: dict = {}
        texts = (("true", expl[latent]), ("random", others[latent]), ("neutral", NEUTRAL_EXPLANATION))
        for which, text in texts:
            for scorer in args.scorers:
                # the neutral explanation is read uncalibrated: calibrated against itself it is 0.5
                one = InterpretConfig(**{**cfg.__dict__, "scorers": [scorer], "calibrate": which != "neutral"})
                scores, decisions = score_latent(client, store, args.hookpoint, latent, text, one, embedder,
                                                 cache=cache, also=tuple(t for _, t in texts))
                s = scores[0]
                classify = scorer in ("detection", "fuzzing")
                variant = "calibrated" if classify and which != "neutral" else ("uncalibrated" if classify else "-")
                values[(scorer, variant)][which].append(headline_value(s))
                if classify and which != "neutral" and decisions:
                    labels = np.array([d["activating"] for d in decisions])
                    raw = np.array([np.nan if d["p_explanation"] is None else d["p_explanation"] for d in decisions])
                    ok = ~np.isnan(raw)
                    a = auroc(labels[ok], raw[ok])
                    values[(scorer, "uncalibrated")][which].append(float("nan") if a is None else a)
                if which == "true" and decisions and scorer != "simulation":
                    labels = np.array([d["activating"] for d in decisions])
                    prob = np.array([np.nan if d["probability"] is None else d["probability"] for d in decisions])
                    ses[scorer].append(auroc_se(labels[~np.isnan(prob)], prob[~np.isnan(prob)]))
                per_latent.append({"latent": latent, "which": which, "scorer": scorer, "value": headline_value(s),
                                   "explanation": text,
                                   "decisions": [{k: d.get(k) for k in ("activating", "quantile", "probability",
                                                                        "p_explanation", "p_neutral", "prompt", "slot")}
                                                 for d in decisions] if which == "true" else []})
        print(f"latent {latent}: {expl[latent]!r} (random: {others[latent]!r})", flush=True)
    # Cost of one explanation scored alone (the usual `autointerp score`), calibrated or not, and of
    # explaining, on the first few latents (explanations here are not stored).
    cost_latents = sorted(expl)[: args.cost_latents]
    t = time.time()
    explain_latents(client, store, args.hookpoint, cost_latents, sampling_config(cfg), ExplainConfig())
    explain_s = (time.time() - t) / max(1, len(cost_latents))
    for scorer in args.scorers:
        for calibrate in (False, True):
            t, n = time.time(), 0
            for latent in cost_latents:
                one = InterpretConfig(**{**cfg.__dict__, "scorers": [scorer], "calibrate": calibrate})
                _, decisions = score_latent(client, store, args.hookpoint, latent, expl[latent], one, embedder)
                n += len(decisions)
            seconds[(scorer, calibrate)].append(time.time() - t)
            n_examples[(scorer, calibrate)] += n
    total = time.time() - t0
    print(f"\n{client.name}, {len(expl)} latents of {args.hookpoint} ({len(latents)} chosen), {args.per_prompt} per "
          f"prompt; explain {t_explain:.0f} s, total {total:.0f} s")
    print(f"{'scorer':11s} {'read-out':13s} {'true':>6s} {'random':>7s} {'neutral':>7s} {'diff':>6s}  95% t interval"
          f"        n  p (sign-flip)  verdict")
    for (scorer, variant), d in values.items():
        t, r = np.array(d["true"]), np.array(d["random"])
        neutral = np.nanmean(d["neutral"]) if d["neutral"] else float("nan")
        ok = ~(np.isnan(t) | np.isnan(r))
        _, lo, hi = t_ci(t[ok] - r[ok])
        word, p = verdict(t[ok] - r[ok], int(ok.sum()))
        print(f"{scorer:11s} {variant:13s} {np.mean(t[ok]):6.3f} {np.mean(r[ok]):7.3f} {neutral:7.3f} "
              f"{np.mean(t[ok] - r[ok]):6.3f}  [{lo:6.3f}, {hi:6.3f}]  {ok.sum():3d}  {p:13.4f}  {word}")
    print(f"\ncost on {len(cost_latents)} latents, one explanation scored alone: explain {explain_s:.1f} s/latent")
    print(f"{'scorer':11s} {'s/example':>9s} {'calibrated':>10s} {'ratio':>6s} {'s/latent':>8s} {'AUROC SE/latent':>16s}")
    per_latent_s = explain_s
    for scorer in args.scorers:
        per_ex = {c: sum(seconds[(scorer, c)]) / max(1, n_examples[(scorer, c)]) for c in (False, True)}
        per_lat = sum(seconds[(scorer, True)]) / max(1, len(cost_latents))
        per_latent_s += per_lat
        se = np.nanmean(ses[scorer]) if ses[scorer] else float("nan")
        ratio = per_ex[True] / per_ex[False] if per_ex[False] else float("nan")
        print(f"{scorer:11s} {per_ex[False]:9.3f} {per_ex[True]:10.3f} {ratio:6.2f} {per_lat:8.1f} {se:16.3f}")
    print(f"latents per hour, explain + {' + '.join(args.scorers)} (calibrated): {3600 / per_latent_s:.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps(per_latent, indent=1))


if __name__ == "__main__":
    main()
