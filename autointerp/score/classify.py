"""Detection and fuzzing: several examples per prompt (default 5, as in the paper), one decision
each. In logprob mode the probability of " Yes" vs " No" is read right after "Example i:" in the
assistant turn (one forward per example, all sharing the prompt's KV cache); in generate mode the
answer is generated and parsed, and an example without a parseable line is a failure.

Layout: every slot of a prompt holds activating examples in proportion to the whole test set, so no
slot is systematically the activating one; the layout is seeded per latent (not per explanation),
so a true and a random explanation of one latent are judged on the same prompts."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from autointerp.score.metrics import Decision, summarize
from autointerp.explain.prompts import (ANSWERS, DETECTION_SYSTEM, FUZZING_SYSTEM, NEUTRAL_EXPLANATION, highlight, plain,
                                scorer_messages)
from autointerp.score import ScoreContext, ScoreResult
from autointerp.store import Example


@dataclass
class ClassifyConfig:
    per_prompt: int = 5
    mode: str = "logprob"  # logprob | generate
    threshold: float = 0.3
    seed: int = 0  # layout and false highlights; pass store.latent_seed(seed, hookpoint, latent)
    calibrate: bool = True  # logprob mode: logit P(Yes | explanation) - logit P(Yes | neutral explanation)


def slot_layout(n_act: int, n_neg: int, per_prompt: int, rng: random.Random) -> list[list[bool]]:
    """Per prompt, per slot: does it hold an activating example? Each slot position (a column
    across prompts) gets activating examples in proportion to its size (largest remainder, ties
    broken at random); which prompts get them within a column is random."""
    total = n_act + n_neg
    sizes = [min(per_prompt, total - i) for i in range(0, total, per_prompt)]
    columns = [[g for g, size in enumerate(sizes) if size > s] for s in range(max(sizes, default=0))]
    quota = [divmod(n_act * len(c), total) for c in columns]  # (whole part, remainder) of n_act*|c|/total
    extra = sorted(range(len(columns)), key=lambda s: (-quota[s][1], rng.random()))
    k = [q for q, _ in quota]
    for s in extra[: n_act - sum(k)]:
        k[s] += 1
    layout = [[False] * size for size in sizes]
    for s, column in enumerate(columns):
        for g in rng.sample(column, k[s]):
            layout[g][s] = True
    return layout


def _spans(marked: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of marked tokens."""
    out: list[tuple[int, int]] = []
    for i, m in enumerate(marked):
        if m and (i == 0 or not marked[i - 1]):
            out.append((i, 1))
        elif m:
            out[-1] = (out[-1][0], out[-1][1] + 1)
    return out


def false_highlight(n_tokens: int, template: Example, threshold: float, rng: random.Random) -> set[int]:
    """Positions to mark in a silent window: the span layout (number and lengths of spans) of a
    real activating example, placed at random, not overlapping or touching (so spans stay apart).
    Spans that do not fit a shorter window are dropped."""
    lengths = [n for _, n in _spans([a > 0 and a >= threshold * template.max_act for a in template.acts])]
    rng.shuffle(lengths)
    while lengths and sum(lengths) + len(lengths) - 1 > n_tokens:
        lengths.pop()
    k = len(lengths)
    if not k:
        return set()
    slack = n_tokens - sum(lengths) - (k - 1)
    bars = sorted(rng.sample(range(slack + k), k))  # stars and bars: slack split into k + 1 gaps
    gaps = [bars[0]] + [b - a - 1 for a, b in zip(bars, bars[1:])]
    marked, pos = set(), 0
    for gap, length in zip(gaps, lengths):
        pos += gap
        marked.update(range(pos, pos + length))
        pos += length + 1  # the one token that keeps spans apart
    return marked


def _shown_text(scorer: str, example: Example, activating: bool, rng: random.Random,
                templates: list[Example], threshold: float) -> str:
    if scorer == "detection":
        return plain(example)
    if activating or not templates:
        return highlight(example, threshold)
    # Silent window: the highlight shape of a real activating example (seeded choice), so the
    # shape of the marks does not give the answer away.
    return highlight(example, positions=false_highlight(len(example.tokens), rng.choice(templates), threshold, rng))


def _parse_lines(raw: str, n: int) -> list[bool | None]:
    found: dict[int, bool] = {}
    for m in re.finditer(r"example\s*(\d+)\s*[:\-.]\s*\**\s*(yes|no)\b", raw, re.IGNORECASE):
        i = int(m.group(1))
        if 1 <= i <= n and i not in found:
            found[i] = m.group(2).lower() == "yes"
    return [found.get(i) for i in range(1, n + 1)]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _calibrated(p: float, p_neutral: float) -> float:
    """P(Yes) moved by how much the explanation, compared with the neutral one, raised its logit:
    a small scorer's P(Yes) follows the text as much as the explanation (measured: 0.40-0.66 for
    almost every window), and the neutral pass on the same prompt takes the text's share out."""
    return 1 / (1 + math.exp(-(_logit(p) - _logit(p_neutral))))


# How logprob-mode decisions are made (stored with each score as `decision_rule`): the examples are
# ranked by their (calibrated) probability and the top n_activating of the test set are called
# activating. The test set's make-up is known by construction (activating windows per decile plus
# silent ones), so this is a per-test-set threshold; a shift of every example's logit by the same
# amount - what an explanation-wide bias of the scorer or the calibration offset does - changes
# no decision. A fixed P > 0.5 cut did: with a +0.3 logit offset all windows fell on one side
# (balanced accuracy 0.5 at AUROC 1.0). Generate mode parses the scorer's own yes/no.
DECISION_RULE_RANK = "rank: top n_activating of the test set"
DECISION_RULE_PARSED = "parsed answer"


def rank_decisions(probs: list[float | None], activating: list[bool]) -> list[bool | None]:
    """Yes for the n highest probabilities, n = how many of the non-failed examples are activating;
    None where the probability is None (a failure). Ties at the cut are broken by position, which
    the seeded layout makes random with respect to the truth."""
    ok = [i for i, p in enumerate(probs) if p is not None]
    n_yes = sum(1 for i in ok if activating[i])
    order = sorted(ok, key=lambda i: -probs[i])
    yes = set(order[:n_yes])
    return [None if p is None else i in yes for i, p in enumerate(probs)]


def _read_yes(client, scorer: str, system: str, explanations: list[str], texts: list[str], prompt_index: int,
              cache: dict) -> list[list[float | None]]:
    """P(Yes) per example of one prompt under each explanation. Readings are cached per (prompt,
    explanation), so the neutral pass of calibration is run once per latent test set; the missing
    ones go in one call, where they share the examples as a prefix (the explanation comes after them)."""
    keys = {e: (scorer, prompt_index, tuple(texts), e) for e in explanations}
    missing = list(dict.fromkeys(e for e in explanations if keys[e] not in cache))
    if missing:
        prefixes = [f"Example {j}:" for j in range(1, len(texts) + 1)]
        batch = [m for e in missing for m in [scorer_messages(system, e, texts)] * len(texts)]
        probs = client.answer_probs(batch, list(ANSWERS), assistant_prefixes=prefixes * len(missing))
        yes = [None if p is None else float(p[0]) for p in probs]
        for j, e in enumerate(missing):
            cache[keys[e]] = yes[j * len(texts):(j + 1) * len(texts)]
    return [cache[keys[e]] for e in explanations]


def score_classify(scorer: str, client, explanation: str, activating: list[Example], negatives: list[Example],
                   cfg: ClassifyConfig, cache: dict | None = None, also: tuple[str, ...] = ()) -> tuple[dict, list[dict]]:
    """(summary, per-example decision records) for detection or fuzzing. `cache` carries P(Yes)
    readings between explanations scored on the same latent's test set (the calibration's neutral
    pass among them); `also` names explanations to read in the same passes, for a later call."""
    cache = {} if cache is None else cache
    rng = random.Random(cfg.seed)
    system = DETECTION_SYSTEM if scorer == "detection" else FUZZING_SYSTEM
    act_order, neg_order = rng.sample(activating, len(activating)), rng.sample(negatives, len(negatives))
    layout = slot_layout(len(activating), len(negatives), cfg.per_prompt, rng)
    items = [(act_order.pop(), True) if is_act else (neg_order.pop(), False) for slots in layout for is_act in slots]
    where = [(g, s) for g, slots in enumerate(layout) for s in range(len(slots))]  # (prompt, slot) of each item
    shown = [_shown_text(scorer, e, act, rng, activating, cfg.threshold) for e, act in items]
    groups = [list(range(i, min(i + cfg.per_prompt, len(items)))) for i in range(0, len(items), cfg.per_prompt)]
    probs: list[float | None] = [None] * len(items)
    preds: list[bool | None] = [None] * len(items)
    raws: list[str] = [""] * len(items)
    p_expl: list[float | None] = [None] * len(items)
    p_neutral: list[float | None] = [None] * len(items)
    prompts = [scorer_messages(system, explanation, [shown[i] for i in g]) for g in groups]
    if cfg.mode == "logprob":
        for prompt_index, g in enumerate(groups):
            # One call per prompt: its examples then form the shared prefix that the transformers
            # backend computes once (mixing prompts in a batch would recompute every example).
            wanted = [explanation, *([NEUTRAL_EXPLANATION] if cfg.calibrate else []), *also]
            yes, *rest = _read_yes(client, scorer, system, wanted, [shown[i] for i in g], prompt_index, cache)
            neutral = rest[0] if cfg.calibrate else [None] * len(g)
            for i, p, pn in zip(g, yes, neutral):
                if p is None or (cfg.calibrate and pn is None):
                    # the server's top logprobs held neither answer: a counted failure
                    raws[i] = "no Yes/No among the top logprobs"
                    continue
                probs[i] = _calibrated(p, pn) if cfg.calibrate else p
                p_expl[i], p_neutral[i] = p, pn
        preds = rank_decisions(probs, [act for _, act in items])
    elif cfg.mode == "generate":
        answers = client.generate(prompts, max_tokens=8 * cfg.per_prompt)
        for g, raw in zip(groups, answers):
            for i, verdict in zip(g, _parse_lines(raw, len(g))):
                preds[i], raws[i] = verdict, raw
    else:
        raise ValueError(f"unknown mode {cfg.mode!r}: use logprob or generate")
    decisions = [Decision(act, preds[i], probs[i], (e.quantile or 0) if act else 0) for i, (e, act) in enumerate(items)]
    records = [{"doc_id": e.doc_id, "start": e.start, "activating": act, "quantile": d.quantile,
                "prediction": d.prediction, "probability": d.probability, "failed": d.failed, "raw": raws[i],
                "shown": shown[i], "prompt": where[i][0], "slot": where[i][1], "p_explanation": p_expl[i],
                "p_neutral": p_neutral[i]}
               for i, ((e, act), d) in enumerate(zip(items, decisions))]
    summary = summarize(decisions)
    summary["decision_rule"] = DECISION_RULE_RANK if cfg.mode == "logprob" else DECISION_RULE_PARSED
    return summary, records


def _run(scorer: str, ctx: ScoreContext) -> ScoreResult:
    cfg = ctx.cfg
    calibrate = cfg.calibrate and cfg.mode == "logprob"
    summary, records = score_classify(scorer, ctx.client, ctx.explanation, ctx.activating, ctx.negatives,
                                      ClassifyConfig(per_prompt=cfg.per_prompt, mode=cfg.mode, threshold=cfg.threshold,
                                                     seed=ctx.seed, calibrate=calibrate), ctx.cache, ctx.also)
    return ScoreResult(summary, records, mode=cfg.mode + ("-calibrated" if calibrate else ""))


def run_detection(ctx: ScoreContext) -> ScoreResult:
    return _run("detection", ctx)


def run_fuzzing(ctx: ScoreContext) -> ScoreResult:
    return _run("fuzzing", ctx)
