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
# next_token_probs batches up to this many times batch_size sequences: most of each sequence is a
# prefix computed once for many of them, and only the short suffixes take batch memory
PACK_FACTOR = 4


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def _packed(seqs: list[list[int]], limit: int) -> list[list[int]]:
    """Indices of seqs cut into consecutive batches of at most `limit`, cutting between runs that
    share a prefix beyond the one all of them share, so that no prompt's examples are split across
    two batches (and computed twice) unless a run alone is longer than the limit."""
    if len(seqs) <= limit:
        return [list(range(len(seqs)))]
    base = _common_prefix_len(seqs)
    batches: list[list[int]] = [[]]
    for run in _runs_sharing_prefix(seqs, base + MIN_SHARED_PREFIX):
        for i in range(0, len(run), limit):
            piece = run[i:i + limit]
            if len(batches[-1]) + len(piece) > limit:
                batches.append([])
            batches[-1] += piece
    return [b for b in batches if b]


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
        from autointerp.models.subject import load_causal_lm

        self.cfg = cfg
        self.name = f"transformers:{cfg.model}"
        from autointerp.core.devices import resolve_device

        self.device = resolve_device(cfg.device)
        # Batched scoring (llm/lockstep.py) combines a chunk of latents' calls only on a GPU: on a
        # CPU one latent's batch already keeps the cores busy, and combining measured 0.90x
        # (Qwen-1.5B, bf16, 2 cores; docs/benchmarks.md "Batched scoring").
        self.combines_latents = str(self.device).startswith("cuda")
        self.model, self.tok = load_causal_lm(cfg.model, cfg.dtype, self.device)
        self.model.to(self.device).eval()
        self.engine = f"transformers {str(self.model.dtype).removeprefix('torch.')} {self.device}"
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
        shared prefixes."""
        # Answer logits in float32 from the hidden state: bf16 logits are rounded to ~0.125 and
        # tie many probabilities (measured: 70 distinct values among 240 scores).
        out: list[list[float]] = []
        for idx in _packed(seqs, PACK_FACTOR * self.cfg.batch_size):
            out += torch.softmax(self._answer_logits(self._last_hidden([seqs[i] for i in idx]), answer_ids),
                                 dim=-1).tolist()
        return out

    def _answer_logits(self, hidden: torch.Tensor, answer_ids: list[int]) -> torch.Tensor:
        """The logits of answer_ids only, float32, through the same path as the model's own logits
        (_logits): the LM head's rows and bias, then logit scaling and final softcapping, which
        act on each logit alone. Skipping them moved a Gemma-2 P(Yes) (cap 5) from 0.9987 to 0.9998."""
        head = self.model.get_output_embeddings()
        logits = hidden.float() @ head.weight[answer_ids].float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[answer_ids].float()
        return self._final_transforms(logits)

    def _final_transforms(self, logits: torch.Tensor) -> torch.Tensor:
        conf = self.model.config
        if getattr(conf, "logit_scale", None):
            logits = logits * conf.logit_scale
        if getattr(conf, "final_logit_softcapping", None):
            cap = conf.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _last_hidden(self, batch: list[list[int]]) -> torch.Tensor:
        """Final hidden state at each sequence's last token, float32 [batch, d_model]."""
        return torch.stack([h[0] for h in self._hidden_at(batch, [[len(s) - 1] for s in batch])]).float()

    def _extend(self, past, ids: list[int], offset: int):
        """The KV cache of `past` (batch 1, `offset` tokens, or None) extended by ids."""
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=past, use_cache=True,
                         position_ids=torch.arange(offset, offset + len(ids), device=self.device)[None])
        return out.past_key_values

    def _hidden_at(self, batch: list[list[int]], positions: list[list[int]], past=None,
                   offset: int = 0) -> list[torch.Tensor]:
        """Final hidden states [len(positions[j]), d_model] (model dtype) at the given positions of
        each sequence, after a batch-1 KV cache `past` of the `offset` tokens they all start with.
        Prefixes run once, as a tree: the prefix the whole batch shares, then, recursively, each run
        of consecutive sequences sharing a longer one (a chunk's instructions, then one prompt's
        examples, then one explanation under several "Example j:" answers). A prefix never
        reaches a position asked for."""
        first = [min(p) if p else len(s) - 1 for s, p in zip(batch, positions)]
        if len(batch) > 1:
            shared = min(_common_prefix_len(batch), min(first))
            if shared - offset >= MIN_SHARED_PREFIX:
                past, offset = self._extend(past, batch[0][offset:shared], offset), shared
        out: list[torch.Tensor | None] = [None] * len(batch)
        alone: list[int] = []  # sequences with no longer prefix to share: one batched call
        for group in (_runs_sharing_prefix(batch, offset + MIN_SHARED_PREFIX) if len(batch) > 1 else [[0]]):
            if len(group) == 1 or min(first[i] for i in group) - offset < MIN_SHARED_PREFIX:
                alone += group
                continue
            got = self._hidden_at([batch[i] for i in group], [positions[i] for i in group],
                                  copy.deepcopy(past), offset)
            for i, h in zip(group, got):
                out[i] = h
        # the suffixes go batch_size at a time: the memory budget of one forward
        pieces = [alone[i:i + self.cfg.batch_size] for i in range(0, len(alone), self.cfg.batch_size)]
        for k, piece in enumerate(pieces):
            kv = past if past is None or k == len(pieces) - 1 else copy.deepcopy(past)
            got = self._suffix_hidden([batch[i][offset:] for i in piece], kv, offset,
                                      [[q - offset for q in positions[i]] for i in piece])
            for i, h in zip(piece, got):
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
        return self._final_transforms(self.model.get_output_embeddings()(hidden).float())

    @torch.inference_mode()
    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        """Loss of each text token after its prompt. The LM head runs only at the text's positions
        (with a 152k vocabulary it costs more than the rest of a short forward), and a prompt shared
        by the batch runs once."""
        seqs = [(self.token_ids(p), self.token_ids(t)) for p, t in zip(prompts, texts)]
        out: list[list[float]] = []
        for idx in _packed([p + t for p, t in seqs], PACK_FACTOR * self.cfg.batch_size):
            batch = [seqs[i] for i in idx]
            hidden = self._hidden_at([p + t for p, t in batch],
                                     [list(range(len(p) - 1, len(p) + len(t) - 1)) for p, t in batch])
            for h, (_, t) in zip(hidden, batch):
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
        out: list[list[list[float]]] = []
        for idx in _packed([ids for ids, _ in items], PACK_FACTOR * self.cfg.batch_size):
            batch = [items[i] for i in idx]
            hidden = self._hidden_at([ids for ids, _ in batch], [pos for _, pos in batch])
            out += [torch.softmax(self._answer_logits(h, answer_ids), dim=-1).tolist() for h in hidden]
        return out
