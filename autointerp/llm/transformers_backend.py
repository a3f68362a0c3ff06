"""The CPU default: a local causal LM through transformers, batched, reusing a shared prompt prefix.

Scoring prompts within a batch share a long prefix (instructions, explanation, the examples shown);
`answer_probs` runs that prefix once, repeats its KV cache across the batch and runs only the
differing suffixes (right-padded, so real tokens never attend to padding and positions stay
contiguous after the prefix).
"""

from __future__ import annotations

import copy
import logging

import torch

from autointerp.llm.base import LLMConfig, Message, TokenizerSide

log = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 8  # below this, reuse costs more bookkeeping than it saves


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def _runs_sharing_prefix(seqs: list[list[int]], min_len: int) -> list[list[int]]:
    """Indices of seqs cut into runs of consecutive sequences that share at least min_len tokens."""
    runs: list[list[int]] = []
    for i, s in enumerate(seqs):
        if runs and _common_prefix_len([seqs[runs[-1][0]], s]) >= min_len:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class TransformersClient(TokenizerSide):
    def __init__(self, cfg: LLMConfig):
        from autointerp.subject import load_causal_lm

        self.cfg = cfg
        self.name = f"transformers:{cfg.model}"
        from autointerp.devices import resolve_device, resolve_dtype

        self.device = resolve_device(cfg.device)
        self.model, self.tok = load_causal_lm(cfg.model, resolve_dtype(cfg.dtype, self.device))
        self.model.to(self.device).eval()
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token

    # -- protocol -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]:
        out: list[str] = []
        self.tok.padding_side = "left"
        for i in range(0, len(prompts), self.cfg.batch_size):
            texts = [self.chat_text(m) for m in prompts[i:i + self.cfg.batch_size]]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature}
            gen = self.model.generate(**enc, max_new_tokens=max_tokens, pad_token_id=self.tok.pad_token_id, **kwargs)
            out += self.tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    @torch.inference_mode()
    def next_token_probs(self, seqs: list[list[int]], answer_ids: list[int]) -> list[list[float]]:
        """P(answer | seq) renormalised over answer_ids, for token sequences; batches reuse their
        longest shared prefix."""
        out: list[list[float]] = []
        size = self.cfg.batch_size
        # One prompt read under several explanations shares everything up to the explanation: run it
        # as one batch so that prefix is computed once (the suffixes are a few dozen tokens each).
        if len(seqs) <= 4 * size and _common_prefix_len(seqs) >= MIN_SHARED_PREFIX:
            size = len(seqs)
        for i in range(0, len(seqs), size):
            batch = seqs[i:i + size]
            # Answer logits in float32 from the hidden state: bf16 logits are rounded to ~0.125 and
            # tie many probabilities (measured: 70 distinct values among 240 scores).
            head = self.model.get_output_embeddings().weight[answer_ids].float()
            out += torch.softmax(self._last_hidden(batch) @ head.T, dim=-1).tolist()
        return out

    def _last_hidden(self, batch: list[list[int]]) -> torch.Tensor:
        """Final hidden state at each sequence's last token, float32 [batch, d_model]."""
        return torch.stack([h[0] for h in self._hidden_at(batch, [[len(s) - 1] for s in batch])]).float()

    def _hidden_at(self, batch: list[list[int]], positions: list[list[int]]) -> list[torch.Tensor]:
        """Final hidden states [len(positions[j]), d_model] (model dtype) at the given positions of
        each sequence. The prefix shared by the whole batch runs once; then each run of consecutive
        sequences sharing a longer prefix (one explanation under several "Example j:" answers)
        extends it once. A prefix never reaches a position asked for."""
        first = [min(p) if p else len(s) - 1 for s, p in zip(batch, positions)]
        shared = _common_prefix_len(batch) if len(batch) > 1 else 0
        shared = min(shared, min(first))
        if shared < MIN_SHARED_PREFIX:
            return self._suffix_hidden(batch, None, 0, positions)
        past = self.model(input_ids=torch.tensor([batch[0][:shared]], device=self.device),
                          use_cache=True).past_key_values
        out: list[torch.Tensor | None] = [None] * len(batch)
        alone: list[int] = []  # sequences with no longer prefix to share: one batched call after the prefix
        for group in _runs_sharing_prefix(batch, shared + MIN_SHARED_PREFIX):
            seqs = [batch[i] for i in group]
            extra = min(_common_prefix_len(seqs), min(first[i] for i in group)) if len(group) > 1 else shared
            if extra - shared < MIN_SHARED_PREFIX:
                alone += group
                continue
            ids = torch.tensor([seqs[0][shared:extra]], device=self.device)
            group_past = self.model(input_ids=ids, past_key_values=copy.deepcopy(past), use_cache=True,
                                    position_ids=torch.arange(shared, extra, device=self.device)[None]).past_key_values
            got = self._suffix_hidden([s[extra:] for s in seqs], group_past, extra,
                                      [[q - extra for q in positions[i]] for i in group])
            for i, h in zip(group, got):
                out[i] = h
        if alone:
            got = self._suffix_hidden([batch[i][shared:] for i in alone], past, shared,
                                      [[q - shared for q in positions[i]] for i in alone])
            for i, h in zip(alone, got):
                out[i] = h
        return out

    def _suffix_hidden(self, suffixes: list[list[int]], past, offset: int,
                       positions: list[list[int]]) -> list[torch.Tensor]:
        """Hidden states at `positions` (relative to each suffix) of each suffix, right-padded,
        after a batch-1 KV cache of `offset` tokens (repeated across the batch) or none."""
        prefix_mask = None
        if past is not None:
            past.batch_repeat_interleave(len(suffixes))
            prefix_mask = torch.ones(len(suffixes), offset, dtype=torch.long)
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(suffixes), width, dtype=torch.long)
        for j, s in enumerate(suffixes):
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
        full_mask = mask if prefix_mask is None else torch.cat([prefix_mask, mask], dim=1)
        pos_ids = (torch.arange(width) + offset).expand(len(suffixes), -1)
        ids, full_mask, pos_ids = ids.to(self.device), full_mask.to(self.device), pos_ids.to(self.device)
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(input_ids=ids, attention_mask=full_mask, past_key_values=past, position_ids=pos_ids,
                      use_cache=past is not None).last_hidden_state
        return [hidden[j, torch.tensor(p, dtype=torch.long, device=self.device)] for j, p in enumerate(positions)]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on some hidden states, float32, with the final-logit transforms some
        architectures apply after it (softcapping, scaling)."""
        logits = self.model.get_output_embeddings()(hidden).float()
        conf = self.model.config
        if getattr(conf, "logit_scale", None):
            logits = logits * conf.logit_scale
        if getattr(conf, "final_logit_softcapping", None):
            cap = conf.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    @torch.inference_mode()
    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        """Loss of each text token after its prompt. The LM head runs only at the text's positions
        (with a 152k vocabulary it costs more than the rest of a short forward), and a prompt shared
        by the batch runs once."""
        out: list[list[float]] = []
        for i in range(0, len(prompts), self.cfg.batch_size):
            pairs = list(zip(prompts[i:i + self.cfg.batch_size], texts[i:i + self.cfg.batch_size]))
            seqs = [(self.token_ids(p), self.token_ids(t)) for p, t in pairs]
            hidden = self._hidden_at([p + t for p, t in seqs],
                                     [list(range(len(p) - 1, len(p) + len(t) - 1)) for p, t in seqs])
            for h, (_, t) in zip(hidden, seqs):
                logp = torch.log_softmax(self._logits(h), dim=-1)
                rows, cols = torch.arange(len(t), device=self.device), torch.tensor(t, device=self.device)
                out.append((-logp[rows, cols]).tolist())
        return out

    @torch.inference_mode()
    def positional_probs(self, items: list[tuple[list[int], list[int]]], answer_ids: list[int]
                         ) -> list[list[list[float]]]:
        """For each (ids, positions): at each position, P(next token = answer) renormalised over
        answers (simulation's all-at-once read-out). Batched; the instructions, worked examples and
        explanation that the sequences share run once."""
        head = self.model.get_output_embeddings().weight[answer_ids].float()
        out: list[list[list[float]]] = []
        for i in range(0, len(items), self.cfg.batch_size):
            batch = items[i:i + self.cfg.batch_size]
            hidden = self._hidden_at([ids for ids, _ in batch], [pos for _, pos in batch])
            out += [torch.softmax(h.float() @ head.T, dim=-1).tolist() for h in hidden]
        return out
