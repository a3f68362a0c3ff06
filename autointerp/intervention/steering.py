"""Steering the subject model: add a vector to a hookpoint's activation at every position.

The vector is written where the cache reads (Subject.hook_site): the decoder layer's output for
`resid_post.L`, the MLP's output for `mlp_out.L`, the down projection's input for `mlp_neurons.L`
(so a neuron's direction is its unit vector in the MLP hidden layer, which equals adding its
down-projection column to `mlp_out.L`). Unlike the cache, every forward here runs the whole model
and the lm_head: steering is judged by what the model outputs.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch

from autointerp.core.errors import AutointerpError
from autointerp.models.subject import Subject


def model_context(subject: Subject) -> int | None:
    """The longest sequence the subject's position embeddings allow (None when it states none)."""
    cfg = subject.model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(subject: Subject, seqs: list[list[int]], new_tokens: int) -> None:
    """Refuse prompts that, with their continuation, would not fit the model's context."""
    if not seqs or min(len(s) for s in seqs) == 0:
        raise AutointerpError("steering needs at least one non-empty prompt: raise --n-intervention-prompts "
                              "and --prompt-tokens above 0")
    ctx, longest = model_context(subject), max(len(s) for s in seqs)
    if ctx is not None and longest + new_tokens > ctx:
        raise AutointerpError(f"a prompt of {longest} tokens plus {new_tokens} new tokens exceeds {subject.name}'s "
                              f"context of {ctx} tokens: lower --prompt-tokens or --new-tokens")


@contextlib.contextmanager
def steering(subject: Subject, hookpoint: str, vector: torch.Tensor | None) -> Iterator[None]:
    """While open, every forward of subject.model adds `vector` ([d] at the hookpoint; None: no
    steering) to the hookpoint's activation at every position. The hook is removed on exit, also
    on an exception, so later forwards are clean."""
    if vector is None:
        yield
        return
    module, pre = subject.hook_site(hookpoint)
    d = subject.hookpoint_dim(hookpoint)
    if vector.shape != (d,):
        raise AutointerpError(f"a steering vector of shape {tuple(vector.shape)} does not fit {hookpoint} "
                              f"(width {d}): use a direction of this model and hookpoint")
    v = vector.to(device=subject.model.device, dtype=subject.dtype)

    def add_to_input(mod, args):
        return (args[0] + v, *args[1:])

    def add_to_output(mod, args, output):
        if isinstance(output, tuple):
            return (output[0] + v, *output[1:])
        return output + v

    handle = module.register_forward_pre_hook(add_to_input) if pre else module.register_forward_hook(add_to_output)
    try:
        yield
    finally:
        handle.remove()


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), left-padded so every last token is at -1 and
    each sequence's positions start at 0 whatever its padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which this transformers version passes and returns the KV cache (`cache`
    since 5.24, `past_key_values` before)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def _pad_id(subject: Subject) -> int:
    tok = subject.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return int(pad if pad is not None else 0)


@torch.inference_mode()
def next_token_logprobs(subject: Subject, seqs: list[list[int]], hookpoint: str | None = None,
                        vector: torch.Tensor | None = None, batch_size: int = 16) -> torch.Tensor:
    """log P(next token) after each sequence, float64 [n, vocab]: a full forward (lm_head at the
    last position only), steered by `vector` at `hookpoint` when given."""
    out = []
    dev = subject.model.device
    with steering(subject, hookpoint, vector):
        for i in range(0, len(seqs), batch_size):
            ids, mask, pos = left_pad(seqs[i:i + batch_size], _pad_id(subject))
            logits = subject.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                   use_cache=False, logits_to_keep=1).logits[:, -1]
            out.append(torch.log_softmax(logits.double().cpu(), dim=-1))
    return torch.cat(out)


def mean_kl(clean: torch.Tensor, steered: torch.Tensor) -> float:
    """Mean over prompts of KL(clean || steered), in nats, from log-probabilities [n, vocab]."""
    kl = (clean.exp() * (clean - steered)).sum(-1)
    return float(kl.clamp_min(0).mean())


@torch.inference_mode()
def greedy_continuations(subject: Subject, seqs: list[list[int]], new_tokens: int, hookpoint: str | None = None,
                         vector: torch.Tensor | None = None, batch_size: int = 16) -> list[list[int]]:
    """Exactly `new_tokens` greedy tokens after each sequence (no early stop at EOS, no sampling,
    no logit processors: deterministic), left-padded batches with a KV cache, steered at every
    position (prompt and generated) when a vector is given."""
    check_lengths(subject, seqs, new_tokens)
    model, dev, out = subject.model, subject.model.device, []
    with steering(subject, hookpoint, vector):
        for i in range(0, len(seqs), batch_size):
            ids, mask, pos = (t.to(dev) for t in left_pad(seqs[i:i + batch_size], _pad_id(subject)))
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            steps = []
            for step in range(new_tokens):
                nxt = res.logits[:, -1].argmax(-1)
                steps.append(nxt)
                if step == new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos[:, -1:] + 1
                res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                            **{_cache_kwarg(model): res[_cache_kwarg(model)]})
            out += torch.stack(steps, dim=1).cpu().tolist()
    return out
