"""Output-based explanations: the explainer reads how the subject model continues prompts clean and
with the latent steered, and names the effect ("makes the model talk about ..."). The paper's
second kind of explanation: input explanations say when a latent fires, output explanations what
it does to the model's output, and the intervention scorer tests the latter directly.

The steered text comes from the intervention scorer's own machinery (same prompts, search and
greedy continuations), at the target KL nearest 1 (log scale) that the search reached. A latent
whose input explanation was already intervention-scored reuses those stored continuations, so no
subject model is loaded for it.
"""

from __future__ import annotations

import logging
import math

from autointerp.config import InterpretConfig
from autointerp.explain.explainers import parse_explanation
from autointerp.intervention.scorer import HEADLINE_KL, InterventionConfig, InterventionScorer, unit
from autointerp.llm import engine_of
from autointerp.explain.prompts import output_explainer_messages
from autointerp.store import RunStore

log = logging.getLogger(__name__)

KIND = "output"
Samples = list[tuple[str, str, str]]  # (prompt, clean continuation, steered continuation)


class NoSteeredText(Exception):
    """The latent cannot be shown steered (a zero direction, no target reached): a recorded failure."""


def nearest_target(targets: list[float], headline: float = HEADLINE_KL) -> float:
    """The target nearest `headline` on a log scale (the smaller one on a tie)."""
    return min(targets, key=lambda t: (abs(math.log(t) - math.log(headline)), t))


class OutputExplainer:
    """Explains latents of one set by their effect on the output; the steering model is loaded
    only when some latent has no stored continuations to reuse."""

    def __init__(self, client, store: RunStore, cfg: InterpretConfig, max_tokens: int = 60):
        InterventionConfig.from_interpret(cfg)  # one-line errors (target KL <= 0, ...) before any model loads
        self.client, self.store, self.cfg, self.max_tokens = client, store, cfg, max_tokens
        self.stored = store.interventions(cfg.hookpoint)
        self._steerer: InterventionScorer | None = None

    def steerer(self) -> InterventionScorer:
        if self._steerer is None:
            self._steerer = InterventionScorer.for_run(self.cfg, self.client, self.store)
        return self._steerer

    def stored_samples(self, latent: int) -> tuple[float, Samples] | None:
        """(target KL, samples) from the latent's latest intervention score, if it has continuations."""
        rows = self.stored[(self.stored.latent == latent) & self.stored.reached.astype(bool)] \
            if len(self.stored) else self.stored
        if rows.empty:
            return None
        target = nearest_target(rows.target_kl.tolist())
        ex = self.store.intervention_examples(rows.score_id.iloc[0])
        ex = ex[(ex.direction == "latent") & (ex.target_kl == target)] if len(ex) else ex
        if ex.empty:
            return None
        return target, list(zip(ex.prompt_text, ex.clean_text, ex.steered_text))

    def steered_samples(self, latent: int) -> tuple[float, Samples]:
        """(target KL, samples) by steering now: the search over --target-kls, then continuations at
        the reached target nearest 1."""
        s = self.steerer()
        direction = unit(s.directions[int(latent)])
        if direction is None:
            raise NoSteeredText(f"latent {latent} has a zero decoder direction: there is nothing to steer")
        found = {t: r for t, r in s.search(direction).items() if r.reached}
        if not found:
            raise NoSteeredText(f"steering latent {latent} reached none of the target KLs "
                                f"{', '.join(f'{t:g}' for t in s.cfg.target_kls)}")
        target = nearest_target(list(found))
        steered = s.continuations(found[target].alpha * direction)
        return target, list(zip(s.prompt_texts, s.clean_texts, steered))

    def samples(self, latent: int) -> tuple[float, Samples, str]:
        """(target KL, samples, where they came from)."""
        stored = self.stored_samples(latent)
        if stored is not None:
            return (*stored, "stored")
        return (*self.steered_samples(latent), "steered")

    def explain(self, latents: list[int]) -> list[dict]:
        """One explanation record per latent, kind "output"; a latent that cannot be steered or whose
        answer does not parse is a recorded failure (explanation None, error and raw answer kept)."""
        rows, prompts = [], []
        for latent in latents:
            row = {"hookpoint": self.cfg.hookpoint, "latent": int(latent), "explanation": None, "raw": "",
                   "error": None, "model": self.client.name,
                   "engine": engine_of(self.client), "strategy": None, "n_examples": 0, "kind": KIND}
            try:
                target, samples, source = self.samples(int(latent))
            except NoSteeredText as e:
                rows.append({**row, "error": str(e)})
                continue
            row |= {"strategy": f"steered kl={target:g} ({source})", "n_examples": len(samples)}
            prompts.append((len(rows), output_explainer_messages(samples)))
            rows.append(row)
        if prompts:
            answers = self.client.generate([m for _, m in prompts], max_tokens=self.max_tokens)
            for (i, _), raw in zip(prompts, answers):
                rows[i]["raw"] = raw
                rows[i]["explanation"] = parse_explanation(raw)
                if rows[i]["explanation"] is None:
                    rows[i]["error"] = "unparseable explainer answer"
        log.info("explained %d latents by their output (%d failures)", len(rows),
                 sum(r["explanation"] is None for r in rows))
        return rows
