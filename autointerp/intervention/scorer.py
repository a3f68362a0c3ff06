"""The intervention scorer: does the explanation predict what steering the latent does to the output?

For each latent and target KL: find alpha (search.py) for the latent's unit decoder direction,
generate greedy continuations of the same corpus prompts clean and steered, and read the scorer
LM's log P(explanation | continuation) on both. The score is the mean over prompts of
log P(explanation | steered) - log P(explanation | clean), in nats. Two baselines come with every
latent, on the same prompts: a random explanation (another latent's) on the latent's direction,
and the true explanation on a random unit direction (seeded per latent) steered to the same KL.
Prompts are the same for every latent (seeded by the run's seed), so the clean side is computed once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch

from autointerp.models.coders import coder_from_manifest
from autointerp.core.errors import AutointerpError
from autointerp.llm import engine_of
from autointerp.intervention.alpha_search import LOG10_ALPHA_RANGE, AlphaResult, search_alphas
from autointerp.intervention.steering import (check_lengths, greedy_continuations, mean_kl, next_token_logprobs)
from autointerp.score.metrics import t_ci
from autointerp.explain.prompts import defuse
from autointerp.store import SPECIAL_TOKEN_MARK, RunStore, latent_seed
from autointerp.models.subject import Subject

log = logging.getLogger(__name__)

SCORER = "intervention"
# The continuation is the passage; the explanation is the text whose log-probability is read.
PROMPT = "Passage: {text}\nWhat the passage is about, or the kind of words it uses:"
HEADLINE_KL = 1.0  # the target whose score is a latent's headline (or the nearest target on a log scale)


@dataclass
class InterventionConfig:
    target_kls: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0])
    rtol: float = 0.1
    n_prompts: int = 8
    prompt_tokens: int = 32
    new_tokens: int = 8
    seed: int = 0
    batch_size: int = 16

    def check(self) -> None:
        """One-line errors for settings that cannot work, before any model is loaded."""
        if not self.target_kls:
            raise AutointerpError("no target KL given: pass --target-kls, e.g. 0.1 0.3 1 3")
        bad = [t for t in self.target_kls if not t > 0]
        if bad:
            raise AutointerpError(f"target KL {bad[0]} is not positive: KL(clean || steered) is > 0 for any "
                                  f"steering, so pass targets above 0, e.g. --target-kls 0.1 0.3 1 3")
        if not 0 < self.rtol < 1:
            raise AutointerpError(f"KL tolerance {self.rtol} is outside (0, 1): pass e.g. --kl-rtol 0.1")
        for name, flag in (("n_prompts", "--n-intervention-prompts"), ("prompt_tokens", "--prompt-tokens"),
                           ("new_tokens", "--new-tokens")):
            if getattr(self, name) < 1:
                raise AutointerpError(f"{flag} is {getattr(self, name)}: it must be at least 1")

    @property
    def headline_kl(self) -> float:
        return min(self.target_kls, key=lambda t: (abs(np.log(t) - np.log(HEADLINE_KL)), t))

    @classmethod
    def from_interpret(cls, cfg) -> "InterventionConfig":
        """The intervention settings of an InterpretConfig (the CLI's `score` flags), checked."""
        out = cls(target_kls=list(cfg.target_kls), rtol=cfg.kl_rtol, n_prompts=cfg.n_intervention_prompts,
                  prompt_tokens=cfg.prompt_tokens, new_tokens=cfg.new_tokens, seed=cfg.seed,
                  batch_size=max(cfg.batch_size, 1))
        out.check()
        return out


def coder_directions(coder, width: int) -> torch.Tensor:
    """The coder's decoder directions [n_latents, width] as float32; a coder without them (or with
    directions that do not fit the hookpoint) cannot be steered."""
    get = getattr(coder, "decoder_directions", None)
    try:
        directions = get() if get is not None else None
    except NotImplementedError:
        directions = None
    what = f"{getattr(coder, 'kind', type(coder).__name__)} coder at {getattr(coder, 'hookpoint', '?')}"
    if directions is None:
        raise AutointerpError(f"the {what} has no decoder directions, so its latents cannot be steered: score "
                              f"intervention on a set whose coder has them (sae, sparsify, neurons, topk, random)")
    if tuple(directions.shape) != (coder.n_latents, width):
        raise AutointerpError(f"the {what} gives decoder directions of shape {tuple(directions.shape)}, not "
                              f"({coder.n_latents}, {width}): use a coder trained on this model and hookpoint")
    return directions.detach().float().cpu()


def latent_directions(run_info: dict, latent_set: str, subject: Subject) -> tuple[str, torch.Tensor]:
    """(hookpoint, decoder directions) of a run's latent set, rebuilt from the manifest's coder spec:
    where the decoder writes (a transcoder's output hookpoint, else where the latents are read)."""
    coder = coder_from_manifest(run_info, latent_set, subject)
    hookpoint = getattr(coder, "output_hookpoint", None) or coder.hookpoint
    return hookpoint, coder_directions(coder, subject.hookpoint_dim(hookpoint))


def unit(v: torch.Tensor) -> torch.Tensor | None:
    """v / |v|, or None for a zero vector (a dead latent's decoder row points nowhere)."""
    norm = float(v.norm())
    return v / norm if norm > 1e-8 else None


def random_direction(width: int, seed: int) -> torch.Tensor:
    """A Gaussian direction of unit norm: the same norm as every (unit) latent direction."""
    g = torch.Generator().manual_seed(seed % 2**63)
    return unit(torch.randn(width, generator=g))


def random_explanation(explanations: dict[int, str], latent: int, seed: int) -> str | None:
    """Another latent's explanation, chosen by a per-latent seed (None when no other exists)."""
    own = explanations.get(latent)
    pool = sorted((x, e) for x, e in explanations.items() if x != latent and e != own)
    if not pool:
        return None
    return pool[int(np.random.default_rng(seed).integers(len(pool)))][1]


def sample_prompts(store: RunStore, n: int, prompt_tokens: int, seed: int) -> tuple[list[int], list[list[int]]]:
    """(doc_ids, prompts): the first prompt_tokens tokens (BOS included) of n random contexts."""
    tokens = store.tokens
    if prompt_tokens > tokens.shape[1]:
        raise AutointerpError(f"--prompt-tokens {prompt_tokens} is longer than the run's contexts "
                              f"({tokens.shape[1]} tokens with BOS): lower --prompt-tokens")
    n_ctx = store.n_contexts  # published contexts only (a growing run's matrix holds more)
    docs = np.random.default_rng(seed).choice(n_ctx, size=min(n, n_ctx), replace=False)
    return [int(d) for d in docs], [tokens[d, :prompt_tokens].tolist() for d in docs]


def decode(tokenizer, ids: list[int]) -> str:
    """Token ids as text for a scorer prompt: special tokens as the store's neutral marker,
    control-token-like text defused (the subject's EOS must not end the scorer's turn)."""
    special = set(tokenizer.all_special_ids) | {  # as the cache marks them (token_strings.special)
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    parts, run = [], []
    for t in ids + [None]:
        if t is None or t in special:
            if run:
                parts.append(tokenizer.decode(run))
            if t is not None:
                parts.append(SPECIAL_TOKEN_MARK)
            run = []
        else:
            run.append(t)
    return defuse("".join(parts))


def mean_gain(lp: dict[tuple[str, str], float], steered: list[str] | None, clean: list[str],
              explanation: str | None) -> float | None:
    """Mean over prompts of log P(explanation | steered) - log P(explanation | clean), from the
    scorer LM's log-probabilities `lp` by (text, explanation); None when a side is missing."""
    gains = prompt_gains(lp, steered, clean, explanation)
    return None if gains is None else float(np.mean(gains))


def prompt_gains(lp: dict[tuple[str, str], float], steered: list[str] | None, clean: list[str],
                 explanation: str | None) -> list[float] | None:
    """Per prompt, log P(explanation | steered) - log P(explanation | clean); None when a side is missing."""
    if steered is None or explanation is None:
        return None
    return [lp[(s, explanation)] - lp[(c, explanation)] for s, c in zip(steered, clean)]


class InterventionScorer:
    """Steering experiments on one latent set: prompts, clean baseline and directions are prepared
    once, then `score` runs each latent."""

    def __init__(self, client, subject: Subject, store: RunStore, latent_set: str, cfg: InterventionConfig):
        cfg.check()
        self.client, self.subject, self.store, self.latent_set, self.cfg = client, subject, store, latent_set, cfg
        self.hookpoint, self.directions = latent_directions(store.info, latent_set, subject)
        self.doc_ids, self.prompts = sample_prompts(store, cfg.n_prompts, cfg.prompt_tokens, cfg.seed)
        check_lengths(subject, self.prompts, cfg.new_tokens)
        self.clean_logp = next_token_logprobs(subject, self.prompts, batch_size=cfg.batch_size)
        tok = subject.tokenizer
        self.prompt_texts = [decode(tok, p[1:] if p[0] == tok.bos_token_id else p) for p in self.prompts]
        self.clean_texts = self.continuations(None)

    def kl(self, vector: torch.Tensor | None) -> float:
        """Mean KL(clean || steered) of the next token after each prompt (the last position)."""
        steered = next_token_logprobs(self.subject, self.prompts, self.hookpoint, vector, self.cfg.batch_size)
        return mean_kl(self.clean_logp, steered)

    def search(self, direction: torch.Tensor) -> dict[float, AlphaResult]:
        return search_alphas(lambda alpha: self.kl(alpha * direction), self.cfg.target_kls, self.cfg.rtol)

    def continuations(self, vector: torch.Tensor | None) -> list[str]:
        conts = greedy_continuations(self.subject, self.prompts, self.cfg.new_tokens, self.hookpoint, vector,
                                     self.cfg.batch_size)
        return [decode(self.subject.tokenizer, c) for c in conts]

    def _logps(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """log P(explanation | text) under the scorer LM for each distinct (text, explanation)."""
        todo = list(dict.fromkeys(pairs))
        losses = self.client.token_losses([PROMPT.format(text=t) for t, _ in todo], [" " + e for _, e in todo])
        return {pair: -float(np.sum(loss)) for pair, loss in zip(todo, losses)}

    @classmethod
    def for_run(cls, cfg, client, store: RunStore) -> "InterventionScorer":
        """The scorer for `autointerp score`: the subject model named in the run's manifest, steered
        in cfg.subject_dtype on cfg.device (where --device puts the scorer LM too); the scorer LM is
        the client (--model)."""
        from autointerp.core.devices import resolve_device
        from autointerp.models.subject import load_subject

        icfg = InterventionConfig.from_interpret(cfg)
        subject = load_subject(store.info["model"], dtype=cfg.subject_dtype, device=resolve_device(cfg.device))
        return cls(client, subject, store, cfg.hookpoint, icfg)

    def score_latent(self, latent: int, explanations: dict[int, str]) -> tuple[dict, list[dict], list[dict]]:
        """`score` with the random explanation drawn from the set's other explanations (seeded per latent)."""
        other = random_explanation(explanations, latent, latent_seed(self.cfg.seed, self.latent_set, latent))
        return self.score(latent, explanations[latent], other)

    def score(self, latent: int, explanation: str, other: str | None) -> tuple[dict, list[dict], list[dict]]:
        """(score row, per-target rows, per-example rows) for one latent; `other` is the random
        explanation (None: that baseline is left empty)."""
        cfg = self.cfg
        seed = latent_seed(cfg.seed, self.latent_set, latent)
        stored, explanation = explanation, explanation.strip()  # rows keep the text as stored (resume key)
        base = {"hookpoint": self.latent_set, "latent": int(latent), "score_id": uuid.uuid4().hex}
        score = {**base, "scorer": SCORER, "explanation": stored, "model": self.client.name, "engine": engine_of(self.client),
                 "mode": f"kl={cfg.headline_kl:g}", "target_kl": cfg.headline_kl, "n": 0, "n_failed": 0}
        direction = unit(self.directions[int(latent)])
        if direction is None:
            error = f"latent {latent} has a zero decoder direction: there is nothing to steer"
            return {**score, "error": error}, [], []
        rand_dir = random_direction(direction.shape[0], seed)
        found = {"latent": self.search(direction), "random": self.search(rand_dir)}
        steered = {(t, which): self.continuations(r.alpha * vec)
                   for which, vec in (("latent", direction), ("random", rand_dir))
                   for t, r in found[which].items() if r.reached}
        other = other.strip() if other else None
        expls = [explanation] + ([other] if other else [])
        pairs = [(text, e) for text in self.clean_texts for e in expls]
        for (t, which), texts in steered.items():
            pairs += [(text, e) for text in texts for e in (expls if which == "latent" else [explanation])]
        lp = self._logps(pairs)

        def gain(texts: list[str] | None, e: str | None) -> float | None:
            return mean_gain(lp, texts, self.clean_texts, e)

        targets, examples = [], []
        for t in sorted(found["latent"]):
            lat, rnd = found["latent"][t], found["random"][t]
            mine, theirs = steered.get((t, "latent")), steered.get((t, "random"))
            targets.append({**base, "target_kl": t, "alpha": lat.alpha, "kl": lat.kl, "reached": lat.reached,
                            "iterations": lat.iterations, "random_alpha": rnd.alpha, "random_kl": rnd.kl,
                            "random_reached": rnd.reached, "score": gain(mine, explanation),
                            "random_explanation_score": gain(mine, other),
                            "random_direction_score": gain(theirs, explanation), "explanation": stored,
                            "random_explanation": other, "n": len(self.prompts) if lat.reached else 0})
            for which, texts in (("latent", mine), ("random", theirs)):
                for i, text in enumerate(texts or []):
                    clean = self.clean_texts[i]
                    row = {**base, "target_kl": t, "direction": which, "prompt": i, "doc_id": self.doc_ids[i],
                           "prompt_text": self.prompt_texts[i], "clean_text": clean, "steered_text": text,
                           "logp_clean": lp[(clean, explanation)], "logp_steered": lp[(text, explanation)]}
                    if which == "latent" and other:
                        row |= {"random_logp_clean": lp[(clean, other)], "random_logp_steered": lp[(text, other)]}
                    examples.append(row)
        head = next(r for r in targets if r["target_kl"] == cfg.headline_kl)
        if head["reached"]:
            # the 95 % interval is a t interval over the prompts: each prompt's gain is one paired
            # (steered - clean) measurement of the same explanation
            _, lo, hi = t_ci(prompt_gains(lp, steered[(cfg.headline_kl, "latent")], self.clean_texts, explanation))
            score |= {"intervention_score": head["score"], "n": head["n"], "intervention_score_lo": lo,
                      "intervention_score_hi": hi}
        else:
            lo, hi = (10 ** x for x in LOG10_ALPHA_RANGE)
            score["error"] = (f"steering latent {latent} reached KL {head['kl']:.3g}, not the target "
                              f"{cfg.headline_kl:g} (+/- {cfg.rtol:g}), for alpha in [{lo:g}, {hi:g}]")
        return score, targets, examples
