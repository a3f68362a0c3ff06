"""The explainer: an LLM reads highlighted activating examples and answers one explanation.
An answer we cannot parse is stored as a failure with its raw text, never as an explanation."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass

from autointerp.core.errors import AutointerpError
from autointerp.llm import engine_of
from autointerp.explain.prompts import explainer_messages
from autointerp.explain.sampling import SamplingConfig, TooFewExamples, explanation_examples, hard_negatives
from autointerp.store import RunStore

log = logging.getLogger(__name__)

_TAGGED = re.compile(r"\[?\s*explanation\s*\]?\s*:\s*(.+)", re.IGNORECASE)


EXPLAINERS = ("default", "contrastive")
CONTRAST_WINDOWS = 10  # silent windows a contrastive prompt shows


@dataclass
class ExplainConfig:
    threshold: float = 0.3  # a token is highlighted above this fraction of the example's max
    show_activations: bool = False
    cot: bool = False
    max_tokens: int = 60
    # contrastive: the prompt also shows CONTRAST_WINDOWS silent windows closest (under `embedder`)
    # to the activating examples shown, and asks what tells the two apart (delphi's contrastive explainer)
    explainer: str = "default"
    embedder: str = "minilm"

    def __post_init__(self) -> None:
        if self.explainer not in EXPLAINERS:
            raise AutointerpError(f"unknown explainer {self.explainer!r}: use {' or '.join(EXPLAINERS)}")


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
    embedder = None
    if cfg.explainer == "contrastive":
        from autointerp.models.embedder import load_embedder

        embedder = load_embedder(cfg.embedder)
    for latent in latents:
        row = {"hookpoint": hookpoint, "latent": int(latent), "explanation": None, "raw": "", "error": None,
               "model": client.name, "engine": engine_of(client), "strategy": sampling.strategy, "n_examples": 0,
               "kind": "input", "explainer": cfg.explainer}
        try:
            examples = explanation_examples(store, hookpoint, latent, sampling)
        except TooFewExamples as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        contrast = []
        if cfg.explainer == "contrastive":
            near = dataclasses.replace(sampling, n_negative=CONTRAST_WINDOWS, negatives="hard")
            contrast = hard_negatives(store, hookpoint, latent, examples, near, embedder)
        row["n_examples"] = len(examples)
        # Scoring excludes exactly these windows instead of recomputing them from its own settings
        # (a contrastive prompt's silent windows too: a test on them would reward having seen them).
        row["shown"] = json.dumps([[e.doc_id, e.start] for e in examples + contrast])
        prompts.append((len(rows), explainer_messages(examples, cfg.threshold, cfg.show_activations, cfg.cot,
                                                      contrast=contrast)))
        rows.append(row)
    if prompts:
        answers = client.generate([m for _, m in prompts], max_tokens=cfg.max_tokens * (6 if cfg.cot else 1))
        for (i, _), raw in zip(prompts, answers):
            rows[i]["raw"] = raw
            rows[i]["explanation"] = parse_explanation(raw)
            if rows[i]["explanation"] is None:
                rows[i]["error"] = "unparseable explainer answer"
    return rows
