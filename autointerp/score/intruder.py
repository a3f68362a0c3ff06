"""Intruder scoring (delphi's intruder scorer; "Evaluating SAE interpretability without
explanations", 2025): no explanation is involved. Each prompt shows INTRUDER_ACTIVATING activating
windows of the latent and one silent window of it (the intruder), in a seeded order; the scorer model
is asked which one does not belong. Activating windows carry << >> marks on their activating tokens,
the intruder marks of the same shape at random places (as fuzzing's silent windows), so the marks'
presence gives nothing away and a coherent latent's marked tokens do.

Read-out (logprob mode): P(answer = j) over the digits 1..5 right after "The intruder is (", one
forward per prompt. A small scorer has a strong position bias: Qwen2.5-1.5B put 41-44 % on "(5)"
and picked it in every prompt of two demo latents, which is chance whatever the windows. So by
default (`calibrate`) each prompt's probabilities are divided by the latent's mean probability per
position over its *other* prompts (the intruder's place is random, so that mean is the position
prior) and the call is the largest ratio; on those two latents (with an all-prompt mean) this
turned 0.20 and 0.20 into 0.40 and 0.35; on 12-latent samples it stayed at chance (docs/benchmarks.md). Generate mode parses "(j)" from the answer; an answer without one is a counted
failure, never a guess. The latent's score is the share of right calls, with a Wilson 95 %
interval; chance is 1/5.

One prompt per silent test window: the default test set (20 activating, 20 silent windows) gives 20
prompts, each activating window shown in 4 of them (a seeded cycle, so all are used equally)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

import numpy as np

from autointerp.config import INTRUDER_CHOICES
from autointerp.score.metrics import wilson_ci
from autointerp.explain.prompts import INTRUDER_SYSTEM, highlight, intruder_messages
from autointerp.score.classify import DECISION_RULE_PARSED, false_highlight
from autointerp.score import ScoreContext, ScoreResult
from autointerp.store import Example

INTRUDER_ACTIVATING = INTRUDER_CHOICES - 1  # activating windows per prompt, beside the one intruder
INTRUDER_PREFIX = "The intruder is ("
DECISION_RULE_CALIBRATED = "largest P(position) / the latent's mean P(position) over its other prompts"
DECISION_RULE_RAW = "most probable position"


@dataclass
class IntruderConfig:
    mode: str = "logprob"  # logprob | generate
    threshold: float = 0.3  # share of a window's maximum activation that gets a << >> mark
    seed: int = 0  # prompts and order; pass store.latent_seed(seed, hookpoint, latent)
    calibrate: bool = True  # logprob mode: take the scorer's position bias out (module docstring)


@dataclass
class IntruderPrompt:
    windows: list[Example]
    texts: list[str]
    intruder: int  # 0-based position of the silent window


def intruder_prompts(activating: list[Example], negatives: list[Example], cfg: IntruderConfig) -> list[IntruderPrompt]:
    """One prompt per silent window: INTRUDER_ACTIVATING activating windows drawn in a seeded cycle
    (each used equally often, never twice in one prompt when there are enough) and the intruder at a
    seeded position."""
    rng = random.Random(cfg.seed)
    pool: list[Example] = []
    prompts = []
    for intruder in rng.sample(negatives, len(negatives)):
        shown: list[Example] = []
        while len(shown) < min(INTRUDER_ACTIVATING, len(activating)):
            if not pool:
                pool = rng.sample(activating, len(activating))
            pick = next((e for e in pool if e not in shown), pool[0])
            pool.remove(pick)
            shown.append(pick)
        where = rng.randrange(len(shown) + 1)
        windows = shown[:where] + [intruder] + shown[where:]
        texts = [highlight(e, cfg.threshold) if i != where else
                 highlight(e, positions=false_highlight(len(e.tokens), rng.choice(shown), cfg.threshold, rng))
                 for i, e in enumerate(windows)]
        prompts.append(IntruderPrompt(windows, texts, where))
    return prompts


def _parse_choice(raw: str, n: int) -> int | None:
    m = re.search(r"\((\d+)\)", raw) or re.search(r"\b(\d+)\b", raw)
    if m and 1 <= int(m.group(1)) <= n:
        return int(m.group(1)) - 1
    return None


def score_intruder(client, activating: list[Example], negatives: list[Example],
                   cfg: IntruderConfig) -> tuple[dict, list[dict]]:
    """(summary, one decision record per prompt). A record's window is the intruder; `prediction`
    is whether the scorer picked it, `probability` its P(intruder), `raw` every choice's probability
    (logprob) or the answer (generate)."""
    prompts = intruder_prompts(activating, negatives, cfg)
    messages = [intruder_messages(INTRUDER_SYSTEM, p.texts) for p in prompts]
    n = len(prompts[0].texts) if prompts else INTRUDER_CHOICES
    picks: list[int | None] = []
    probs: list[float | None] = []
    raws: list[str] = []
    if cfg.mode == "logprob":
        answers = [str(j) for j in range(1, n + 1)]
        read = client.answer_probs(messages, answers, assistant_prefixes=[INTRUDER_PREFIX] * len(messages))
        read = [None if p is None else np.asarray(p, dtype=float) for p in read]
        read = [p if p is None or len(p) == n else None for p in read]
        weights = position_calibration(read) if cfg.calibrate else [np.ones(n)] * len(read)
        for p, w, prompt in zip(read, weights, prompts):
            if p is None:  # the server's top logprobs held none of the digits: a counted failure
                picks.append(None), probs.append(None), raws.append("no digit among the top logprobs")
                continue
            q = p * w / float((p * w).sum())
            picks.append(int(np.argmax(q)))
            probs.append(float(q[prompt.intruder]))
            raws.append(json.dumps({"p": [round(float(x), 4) for x in p], "calibrated": [round(float(x), 4) for x in q]}))
        rule = DECISION_RULE_CALIBRATED if cfg.calibrate else DECISION_RULE_RAW
    elif cfg.mode == "generate":
        for raw in client.generate(messages, max_tokens=12):
            picks.append(_parse_choice(raw, n)), probs.append(None), raws.append(raw)
        rule = DECISION_RULE_PARSED
    else:
        raise ValueError(f"unknown mode {cfg.mode!r}: use logprob or generate")
    records = [{"doc_id": p.windows[p.intruder].doc_id, "start": p.windows[p.intruder].start, "activating": False,
                "quantile": 0, "prediction": None if pick is None else pick == p.intruder, "probability": prob,
                "failed": pick is None, "raw": raw, "shown": "\n".join(f"({j}) {t}" for j, t in enumerate(p.texts, 1)),
                "prompt": i, "slot": p.intruder}
               for i, (p, pick, prob, raw) in enumerate(zip(prompts, picks, probs, raws))]
    right = sum(1 for r in records if r["prediction"])
    ok = sum(1 for r in records if not r["failed"])
    lo, hi = wilson_ci(right, ok)
    summary = {"n": ok, "n_failed": len(records) - ok, "accuracy": right / ok if ok else None,
               "accuracy_lo": lo, "accuracy_hi": hi, "decision_rule": rule}
    return summary, records


def position_calibration(read: list[np.ndarray | None]) -> list[np.ndarray]:
    """Per prompt, 1 / the mean probability of each position over the latent's other prompts
    (leave-one-out: a prompt's own answer never sets its weights); ones where too few prompts
    were read to estimate it."""
    ok = [p for p in read if p is not None]
    if len(ok) < 3:
        return [np.ones(len(ok[0]) if ok else INTRUDER_CHOICES)] * len(read)
    total = np.sum(ok, axis=0)
    out = []
    for p in read:
        prior = (total - p) / (len(ok) - 1) if p is not None else total / len(ok)
        out.append(1.0 / np.maximum(prior, 1e-9))
    return out


def run(ctx: ScoreContext) -> ScoreResult:
    cfg = ctx.cfg
    summary, records = score_intruder(ctx.client, ctx.activating, ctx.negatives,
                                      IntruderConfig(mode=cfg.mode, threshold=cfg.threshold, seed=ctx.seed,
                                                     calibrate=cfg.calibrate))
    return ScoreResult(summary, records, mode=cfg.mode + ("-calibrated" if cfg.calibrate and cfg.mode == "logprob"
                                                          else ""))
