"""Detection and fuzzing: several examples per prompt (default 5, as in the paper), one decision
each. In logprob mode the probability of " Yes" vs " No" is read right after "Example i:" in the
assistant turn (one forward per example, all sharing the prompt's KV cache); in generate mode the
answer is generated and parsed, and an example without a parseable line is a failure."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from autointerp.metrics import Decision, summarize
from autointerp.prompts import ANSWERS, DETECTION_SYSTEM, FUZZING_SYSTEM, highlight, plain, scorer_messages
from autointerp.store import Example


@dataclass
class ClassifyConfig:
    per_prompt: int = 5
    mode: str = "logprob"  # logprob | generate
    threshold: float = 0.3
    seed: int = 0


def _shown_text(scorer: str, example: Example, activating: bool, rng: random.Random, n_marks: int,
                threshold: float) -> str:
    if scorer == "detection":
        return plain(example)
    if activating:
        return highlight(example, threshold)
    # Silent window: mark as many random tokens as a typical activating example has marks.
    k = max(1, min(n_marks, len(example.tokens)))
    return highlight(example, positions=set(rng.sample(range(len(example.tokens)), k)))


def _parse_lines(raw: str, n: int) -> list[bool | None]:
    found: dict[int, bool] = {}
    for m in re.finditer(r"example\s*(\d+)\s*[:\-.]\s*\**\s*(yes|no)\b", raw, re.IGNORECASE):
        i = int(m.group(1))
        if 1 <= i <= n and i not in found:
            found[i] = m.group(2).lower() == "yes"
    return [found.get(i) for i in range(1, n + 1)]


def score_classify(scorer: str, client, explanation: str, activating: list[Example], negatives: list[Example],
                   cfg: ClassifyConfig) -> tuple[dict, list[dict]]:
    """(summary, per-example decision records) for detection or fuzzing."""
    rng = random.Random(cfg.seed)
    system = DETECTION_SYSTEM if scorer == "detection" else FUZZING_SYSTEM
    marks = [sum(1 for a in e.acts if a > 0 and a >= cfg.threshold * e.max_act) for e in activating]
    n_marks = int(sorted(marks)[len(marks) // 2]) if marks else 1
    items = [(e, True) for e in activating] + [(e, False) for e in negatives]
    rng.shuffle(items)
    shown = [_shown_text(scorer, e, act, rng, n_marks, cfg.threshold) for e, act in items]
    groups = [list(range(i, min(i + cfg.per_prompt, len(items)))) for i in range(0, len(items), cfg.per_prompt)]
    probs: list[float | None] = [None] * len(items)
    preds: list[bool | None] = [None] * len(items)
    raws: list[str] = [""] * len(items)
    prompts = [scorer_messages(system, explanation, [shown[i] for i in g]) for g in groups]
    if cfg.mode == "logprob":
        results = []
        for g, messages in zip(groups, prompts):
            # One call per prompt: its examples then form the shared prefix that the transformers
            # backend computes once (mixing prompts in a batch would recompute every example).
            probs_g = client.answer_probs([messages] * len(g), list(ANSWERS),
                                          assistant_prefixes=[f"Example {j}:" for j in range(1, len(g) + 1)])
            results += list(zip(g, probs_g))
        for i, p in results:
            if p is None:  # the server's top logprobs held neither answer: a counted failure
                raws[i] = "no Yes/No among the top logprobs"
                continue
            probs[i] = float(p[0])
            preds[i] = p[0] > 0.5
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
                "shown": shown[i]}
               for i, ((e, act), d) in enumerate(zip(items, decisions))]
    return summarize(decisions), records
