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
        self.model, self.tok = load_causal_lm(cfg.model, cfg.dtype)
        self.model.eval()
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token

    # -- protocol -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]:
        out: list[str] = []
        self.tok.padding_side = "left"
        for i in range(0, len(prompts), self.cfg.batch_size):
            texts = [self.chat_text(m) for m in prompts[i:i + self.cfg.batch_size]]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
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
        """Final hidden state at each sequence's last token, float32 [batch, d_model]. The prefix
        shared by the whole batch runs once; then each run of consecutive sequences sharing a
        longer prefix (one explanation under several "Example j:" answers) extends it once."""
        shared = _common_prefix_len(batch) if len(batch) > 1 else 0
        shared = min(shared, min(len(s) for s in batch) - 1)  # every suffix keeps >= 1 token
        if shared < MIN_SHARED_PREFIX:
            return self._suffix_hidden(batch, None, 0)
        past = self.model(input_ids=torch.tensor([batch[0][:shared]]), use_cache=True).past_key_values
        out: list[torch.Tensor] = []
        for group in _runs_sharing_prefix(batch, shared + MIN_SHARED_PREFIX):
            seqs = [batch[i] for i in group]
            extra = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1) if len(seqs) > 1 else shared
            group_past, offset = copy.deepcopy(past), shared
            if extra - shared >= MIN_SHARED_PREFIX:
                ids = torch.tensor([seqs[0][shared:extra]])
                group_past = self.model(input_ids=ids, past_key_values=group_past, use_cache=True,
                                        position_ids=torch.arange(shared, extra)[None]).past_key_values
                offset = extra
            out.append(self._suffix_hidden([s[offset:] for s in seqs], group_past, offset))
        return torch.cat(out)

    def _suffix_hidden(self, suffixes: list[list[int]], past, offset: int) -> torch.Tensor:
        """Last hidden state of each suffix, right-padded, after a batch-1 KV cache of `offset`
        tokens (repeated across the batch) or none."""
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
        positions = (torch.arange(width) + offset).expand(len(suffixes), -1)
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(input_ids=ids, attention_mask=full_mask, past_key_values=past, position_ids=positions,
                      use_cache=past is not None).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in suffixes])
        return hidden[torch.arange(len(suffixes)), last].float()  # [batch, d_model]

    @torch.inference_mode()
    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(prompts), self.cfg.batch_size):
            pairs = list(zip(prompts[i:i + self.cfg.batch_size], texts[i:i + self.cfg.batch_size]))
            seqs = [(self.token_ids(p), self.token_ids(t)) for p, t in pairs]
            width = max(len(p) + len(t) for p, t in seqs)
            ids = torch.full((len(seqs), width), self.tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, (p, t) in enumerate(seqs):
                ids[j, :len(p) + len(t)] = torch.tensor(p + t)
                mask[j, :len(p) + len(t)] = 1
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for j, (p, t) in enumerate(seqs):
                pos = torch.arange(len(p) - 1, len(p) + len(t) - 1)
                out.append((-logp[j, pos, torch.tensor(t)]).tolist())
        return out

    @torch.inference_mode()
    def positional_probs(self, ids: list[int], positions: list[int], answer_ids: list[int]) -> list[list[float]]:
        """One forward over `ids`; at each position, P(next token = answer) renormalised over answers
        (simulation's all-at-once read-out)."""
        hidden = getattr(self.model, self.model.base_model_prefix)(input_ids=torch.tensor([ids])).last_hidden_state
        head = self.model.get_output_embeddings().weight[answer_ids].float()
        return torch.softmax(hidden[0, positions].float() @ head.T, dim=-1).tolist()
