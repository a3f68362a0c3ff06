"""Steering one typed prompt, for the app's Steer panel: the researcher sees what a latent does to a
greedy continuation at a strength alpha they choose, or at the alpha whose next-token KL hits a
target. Same hook, search and generation as the intervention scorer (one prompt instead of the
run's prompts), so what the panel shows is what the scorer measures."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from autointerp.core.errors import AutointerpError
from autointerp.intervention.scorer import decode, unit
from autointerp.intervention.alpha_search import search_alphas
from autointerp.intervention.steering import greedy_continuations, mean_kl, model_context, next_token_logprobs
from autointerp.models.subject import Subject


@dataclass
class SteerResult:
    clean: str
    steered: str
    alpha: float
    kl: float  # KL(clean || steered) of the next token after the prompt, nats
    reached: bool | None = None  # target KL only: whether the search got within tolerance


def prompt_ids(subject: Subject, text: str, new_tokens: int) -> list[int]:
    """The prompt's token ids (BOS first, as the run's prompts), refused with a one-line error when
    empty or when it and its continuation would not fit the model's context."""
    tok = subject.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids if text.strip() else []
    if not ids:
        raise AutointerpError("type a prompt to steer")
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    ctx = model_context(subject)
    if ctx is not None and len(ids) + new_tokens > ctx:
        raise AutointerpError(f"the prompt is {len(ids)} tokens; with {new_tokens} new tokens it exceeds "
                              f"{subject.name}'s context of {ctx} tokens: shorten it")
    return ids


@functools.lru_cache(maxsize=16)
def _clean(subject: Subject, ids: tuple[int, ...], new_tokens: int) -> tuple[torch.Tensor, str]:
    """(next-token log-probs, greedy continuation) without steering: the same on every click with
    this prompt, and half the work of one, so computed once."""
    logp = next_token_logprobs(subject, [list(ids)])
    return logp, decode(subject.tokenizer, greedy_continuations(subject, [list(ids)], new_tokens)[0])


def steer_prompt(subject: Subject, hookpoint: str, direction: torch.Tensor, text: str, new_tokens: int = 20,
                 alpha: float | None = None, target_kl: float | None = None, rtol: float = 0.1) -> SteerResult:
    """Clean and steered greedy continuations of `text`, steered by alpha x the unit `direction`
    at `hookpoint`; give alpha, or target_kl to search alpha as the scorer does."""
    if (alpha is None) == (target_kl is None):
        raise AutointerpError("give a steering strength alpha or a target KL, not both")
    if target_kl is not None and not target_kl > 0:
        raise AutointerpError(f"target KL {target_kl:g} is not positive: any steering gives a KL above 0, "
                              f"so ask for e.g. 1")
    if new_tokens < 1:
        raise AutointerpError(f"{new_tokens} new tokens: generate at least 1")
    ids = prompt_ids(subject, text, new_tokens)
    d = unit(direction.float())
    if d is None:
        raise AutointerpError("this latent's decoder direction is zero: there is nothing to steer")
    clean_logp, clean = _clean(subject, tuple(ids), new_tokens)

    def kl_at(a: float) -> float:
        return mean_kl(clean_logp, next_token_logprobs(subject, [ids], hookpoint, a * d))

    reached = None
    if target_kl is not None:
        found = search_alphas(kl_at, [target_kl], rtol)[target_kl]
        alpha, kl, reached = found.alpha, found.kl, found.reached
    else:
        kl = kl_at(float(alpha))
    steered = greedy_continuations(subject, [ids], new_tokens, hookpoint, float(alpha) * d)[0]
    return SteerResult(clean, decode(subject.tokenizer, steered), float(alpha), kl, reached)
