"""Does the intervention scorer measure anything, and what does it cost? For N random latents of a
set: the intervention score of the latent's direction with its own explanation, against two
baselines on the same prompts (a random unit direction steered to the same target KL with the same
explanation; another latent's explanation on the latent's steered text), at every target KL, with
paired bootstrap 95% CIs over latents. Done for input explanations (explained from activating
examples) and, with --output-explanations, for output explanations (explained from the latent's own
clean-vs-steered continuations at the headline KL). Nothing is written to the run.

    .venv/bin/python bench/intervention.py [--model qwen1.5b] [--latents 30] [--output-explanations]
        [--target-kls 0.1 0.3 1 3] [--out results.json]

Cost: seconds per latent for the two KL searches (latent and random direction), the steered
continuations and the scorer LM's log-probabilities, timed inside the scorer's own methods.
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
from autointerp.explain.explainers import ExplainConfig, explain_latents, parse_explanation  # noqa: E402
from autointerp.runs.interpret import sampling_config, select_latents  # noqa: E402
from autointerp.intervention.output import nearest_target  # noqa: E402
from autointerp.intervention.scorer import (InterventionConfig, InterventionScorer, mean_gain,  # noqa: E402
                                            random_explanation)
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm.transformers_backend import TransformersClient  # noqa: E402
from autointerp.analysis.stats import t_ci  # noqa: E402
from autointerp.explain.prompts import output_explainer_messages  # noqa: E402
from autointerp.store import RunStore, latent_seed, run_path  # noqa: E402
from autointerp.models.subject import load_subject  # noqa: E402


class TimedScorer(InterventionScorer):
    """The scorer with wall time accumulated per phase (search, continuations, scorer LM)."""

    seconds: dict[str, float] = {}

    def _timed(self, phase: str, method, *args):
        t0 = time.time()
        try:
            return method(*args)
        finally:
            self.seconds = {**self.seconds, phase: self.seconds.get(phase, 0.0) + time.time() - t0}

    def search(self, direction):
        return self._timed("search", super().search, direction)

    def _continue(self, vector):
        return self._timed("continuations", super()._continue, vector)

    def _logps(self, pairs):
        return self._timed("scorer LM", super()._logps, pairs)


def ci_line(label: str, a: list, b: list) -> str:
    """mean a, mean b, mean paired diff and its CI over the latents where both exist."""
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 2:
        return f"{label:34s} n={ok.sum()}"
    d = x[ok] - y[ok]
    _, lo, hi = t_ci(d)
    return f"{label:34s} {x[ok].mean():7.3f} {y[ok].mean():7.3f} {d.mean():7.3f}  [{lo:6.3f}, {hi:6.3f}]  {ok.sum():3d}"


def nan(v) -> float:
    return float("nan") if v is None else float(v)


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=30)
    ap.add_argument("--target-kls", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--output-explanations", action="store_true",
                    help="also explain each latent from its steered continuations and score that explanation")
    ap.add_argument("--out", default="", help="write per-latent rows as JSON here (rewritten after every latent)")
    ap.add_argument("--report", default="", help="only print the tables from a JSON written by --out")
    args = ap.parse_args()
    if args.report:
        per_latent = json.loads(Path(args.report).read_text())
        args.output_explanations = all("targets" in r.get("output", {}) for r in per_latent)
        report(args, per_latent, InterventionConfig(target_kls=args.target_kls, n_prompts=args.n_prompts), 0, 0, 0)
        return
    t_start = time.time()
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, model=args.model, random=args.latents,
                          per_prompt=args.per_prompt)
    store = RunStore(run_path(args.run))
    latents = select_latents(store, cfg)
    client = TransformersClient(LLMConfig(model=args.model, batch_size=16))

    t0 = time.time()
    rows = explain_latents(client, store, args.hookpoint, latents, sampling_config(cfg), ExplainConfig())
    explain_s = (time.time() - t0) / len(latents)
    expl = {r["latent"]: r["explanation"] for r in rows if r["explanation"]}
    print(f"explained {len(expl)}/{len(latents)} latents ({explain_s:.1f} s/latent)", flush=True)

    icfg = InterventionConfig(target_kls=args.target_kls, n_prompts=args.n_prompts, seed=cfg.seed)
    t0 = time.time()
    scorer = TimedScorer(client, load_subject(store.info["model"], dtype="float32"), store, args.hookpoint, icfg)
    setup_s = time.time() - t0
    per_latent: list[dict] = []
    for latent in sorted(expl):
        scorer.seconds = {}
        t0 = time.time()
        other = random_explanation(expl, latent, latent_seed(cfg.seed, args.hookpoint, latent))
        score, targets, examples = scorer.score(latent, expl[latent], other)
        rec = {"latent": latent, "explanation": expl[latent], "random_explanation": other,
               "error": score.get("error"), "targets": targets, "examples": examples,
               "seconds": {**scorer.seconds, "total": time.time() - t0}}
        if args.output_explanations:
            rec["output"] = output_explanation(client, scorer, icfg, targets, examples)
            rec["seconds"]["output explanation"] = rec["output"].pop("seconds")
        per_latent.append(rec)
        head = next((t for t in targets if t["target_kl"] == icfg.headline_kl), {})
        print(f"latent {latent}: {expl[latent]!r} score@{icfg.headline_kl:g} {nan(head.get('score')):.2f} "
              f"random dir {nan(head.get('random_direction_score')):.2f} random expl "
              f"{nan(head.get('random_explanation_score')):.2f}  ({rec['seconds']['total']:.0f} s)", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(per_latent, indent=1, default=str))
    if args.output_explanations:
        score_output_explanations(scorer, per_latent, cfg.seed, args.hookpoint)
        if args.out:
            Path(args.out).write_text(json.dumps(per_latent, indent=1, default=str))
    report(args, per_latent, icfg, explain_s, setup_s, time.time() - t_start)


def output_explanation(client, scorer: InterventionScorer, icfg: InterventionConfig, targets: list[dict],
                       examples: list[dict]) -> dict:
    """The latent explained from its steered continuations at the reached target nearest KL 1
    (as `explain --kind output` does), plus the steered texts per target to score it on."""
    t0 = time.time()
    reached = [t["target_kl"] for t in targets if t["reached"]]
    out: dict = {"explanation": None, "target_kl": None, "seconds": 0.0}
    if reached:
        target = nearest_target(reached)
        shown = sorted((e for e in examples if e["direction"] == "latent" and e["target_kl"] == target),
                       key=lambda e: e["prompt"])
        raw = client.generate([output_explainer_messages([(e["prompt_text"], e["clean_text"], e["steered_text"])
                                                          for e in shown])], max_tokens=60)[0]
        out |= {"explanation": parse_explanation(raw), "raw": raw, "target_kl": target}
    out["seconds"] = time.time() - t0
    return out


def score_output_explanations(scorer: InterventionScorer, per_latent: list[dict], seed: int, hookpoint: str) -> None:
    """Per target: the output explanation's gain on the latent's steered text, a random output
    explanation's on the same text, and the output explanation's on the random direction's text."""
    own = {r["latent"]: r["output"]["explanation"] for r in per_latent if r["output"]["explanation"]}
    for r in per_latent:
        e = own.get(r["latent"])
        if e is None:
            continue
        other = random_explanation(own, r["latent"], latent_seed(seed, hookpoint, r["latent"]))
        texts: dict[tuple[float, str], list[str]] = defaultdict(list)
        for ex in sorted(r["examples"], key=lambda x: x["prompt"]):
            texts[(ex["target_kl"], ex["direction"])].append(ex["steered_text"])
        expls = [e] + ([other] if other else [])
        pairs = [(c, x) for c in scorer.clean_texts for x in expls]
        pairs += [(s, x) for key, ts in texts.items() for s in ts for x in expls]
        t0 = time.time()
        lp = scorer._logps(pairs)
        r["seconds"]["output scoring"] = time.time() - t0

        def gain(ts, x):
            return mean_gain(lp, ts or None, scorer.clean_texts, x)

        r["output"] |= {"random_explanation": other, "targets": [
            {"target_kl": t["target_kl"], "score": gain(texts.get((t["target_kl"], "latent")), e),
             "random_explanation_score": gain(texts.get((t["target_kl"], "latent")), other),
             "random_direction_score": gain(texts.get((t["target_kl"], "random")), e)} for t in r["targets"]]}


def report(args, per_latent: list[dict], icfg: InterventionConfig, explain_s: float, setup_s: float,
           total_s: float) -> None:
    print(f"\n{args.model} scorer LM, subject {args.run}'s model, {len(per_latent)} latents of {args.hookpoint}, "
          f"{icfg.n_prompts} prompts x {icfg.prompt_tokens} tokens, {icfg.new_tokens} new tokens; total {total_s:.0f} s")
    kinds = [("input", lambda r: r["targets"])]
    if args.output_explanations:
        kinds.append(("output", lambda r: r["output"].get("targets", [])))
    for kind, get in kinds:
        print(f"\n{kind} explanations: mean score (nats), paired diff, 95% CI over latents, n")
        print(f"{'target KL / comparison':34s} {'a':>7s} {'b':>7s} {'a - b':>7s}  95% CI             n")
        for t in icfg.target_kls:
            rows = [next((x for x in get(r) if x["target_kl"] == t), {}) for r in per_latent]
            score = [nan(x.get("score")) for x in rows]
            print(ci_line(f"KL {t:g}: latent vs random direction", score,
                          [nan(x.get("random_direction_score")) for x in rows]))
            print(ci_line(f"KL {t:g}: true vs random explanation", score,
                          [nan(x.get("random_explanation_score")) for x in rows]))
    reached = defaultdict(lambda: [0, 0])
    for r in per_latent:
        for t in r["targets"]:
            reached[t["target_kl"]][0] += bool(t["reached"])
            reached[t["target_kl"]][1] += bool(t["random_reached"])
    print("\ntargets reached (latent / random direction): " +
          ", ".join(f"KL {t:g}: {a}/{b} of {len(per_latent)}" for t, (a, b) in sorted(reached.items())))
    phases = sorted({p for r in per_latent for p in r["seconds"]})
    print(f"\ncost per latent on this machine (setup once: {setup_s:.0f} s; input explanation {explain_s:.1f} s/latent)")
    for p in phases:
        v = [r["seconds"].get(p, 0.0) for r in per_latent]
        print(f"  {p:20s} mean {np.mean(v):6.1f} s   median {np.median(v):6.1f} s")


if __name__ == "__main__":
    main()
