"""The explainer: an LLM reads highlighted activating examples and answers one explanation.
An answer we cannot parse is stored as a failure with its raw text, never as an explanation."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from autointerp.llm import engine_of
from autointerp.prompts import explainer_messages
from autointerp.sampling import SamplingConfig, TooFewExamples, explanation_examples
from autointerp.store import RunStore

log = logging.getLogger(__name__)

_TAGGED = re.compile(r"\[?\s*explanation\s*\]?\s*:\s*(.+)", re.IGNORECASE)


@dataclass
class ExplainConfig:
    threshold: float = 0.3  # a token is highlighted above this fraction of the example's max
    show_activations: bool = False
    cot: bool = False
    max_tokens: int = 60


def parse_explanation(raw: str) -> str | None:
    """The text after the last `[EXPLANATION]:` tag; else a lone short line; else None."""
    tagged = [m.group(1) for m in _TAGGED.finditer(raw)]
    if tagged:
        text = tagged[-1]
    else:
        lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
        text = lines[0] if len(lines) == 1 and len(lines[0]) <= 200 else ""
    text = text.strip().strip('"').strip("'").strip().rstrip(".").strip()
    text = text.replace("<<", "").replace(">>", "")
    return text or None


def explain_latents(client, store: RunStore, hookpoint: str, latents: list[int], sampling: SamplingConfig,
                    cfg: ExplainConfig) -> list[dict]:
    """One record per latent: explanation (None on failure), raw answer, error, settings, and the
    windows shown (JSON [[doc_id, start], ...])."""
    prompts, rows = [], []
    for latent in latents:
        row = {"hookpoint": hookpoint, "latent": int(latent), "explanation": None, "raw": "", "error": None,
               "model": client.name, "engine": engine_of(client), "strategy": sampling.strategy, "n_examples": 0,
               "kind": "input"}
        try:
            examples = explanation_examples(store, hookpoint, latent, sampling)
        except TooFewExamples as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        row["n_examples"] = len(examples)
        # Scoring excludes exactly these windows instead of recomputing them from its own settings.
        row["shown"] = json.dumps([[e.doc_id, e.start] for e in examples])
        prompts.append((len(rows), explainer_messages(examples, cfg.threshold, cfg.show_activations, cfg.cot)))
        rows.append(row)
    if prompts:
        answers = client.generate([m for _, m in prompts], max_tokens=cfg.max_tokens * (6 if cfg.cot else 1))
        for (i, _), raw in zip(prompts, answers):
            rows[i]["raw"] = raw
            rows[i]["explanation"] = parse_explanation(raw)
            if rows[i]["explanation"] is None:
                rows[i]["error"] = "unparseable explainer answer"
    return rows
