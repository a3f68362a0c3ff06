"""Speed of the surprisal and simulation read-outs on one latent's test set: the transformers
backend's batched path (shared prompt run once, LM head only where read) against the direct way
(full forward with all logits per batch; one forward per simulation example), in the same run,
with the largest difference between the two paths' values.

    .venv/bin/python bench/surprisal_simulation.py [--model qwen1.5b] [--latent L]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_args import llm_bench_parser  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.runs.interpret import sampling_config, select_latents  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm.transformers_backend import TransformersClient  # noqa: E402
from autointerp.explain.prompts import plain  # noqa: E402
from autointerp.explain.sampling import scoring_examples  # noqa: E402
from autointerp.score.simulation import DIGITS, _layout  # noqa: E402
from autointerp.score.surprisal import PROMPT  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402


@torch.inference_mode()
def direct_losses(client, prompt: str, texts: list[str], batch: int) -> list[list[float]]:
    """Every position's logits in one padded forward per batch (the backend's former path)."""
    out = []
    for i in range(0, len(texts), batch):
        seqs = [(client.token_ids(prompt), client.token_ids(t)) for t in texts[i:i + batch]]
        width = max(len(p) + len(t) for p, t in seqs)
        ids = torch.full((len(seqs), width), client.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, (p, t) in enumerate(seqs):
            ids[j, :len(p) + len(t)] = torch.tensor(p + t)
            mask[j, :len(p) + len(t)] = 1
        logp = torch.log_softmax(client.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for j, (p, t) in enumerate(seqs):
            out.append((-logp[j, torch.arange(len(p) - 1, len(p) + len(t) - 1), torch.tensor(t)]).tolist())
    return out


@torch.inference_mode()
def direct_positional(client, items, answer_ids) -> list[list[list[float]]]:
    """One forward per sequence (the backend's former path)."""
    base = getattr(client.model, client.model.base_model_prefix)
    head = client.model.get_output_embeddings().weight[answer_ids].float()
    return [torch.softmax(base(input_ids=torch.tensor([ids])).last_hidden_state[0, pos].float() @ head.T,
                          dim=-1).tolist() for ids, pos in items]


def timed(fn):
    t0 = time.time()
    out = fn()
    return out, time.time() - t0


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=1)
    ap.add_argument("--latent", type=int, default=None)
    args = ap.parse_args()
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, random=1)
    store = RunStore(run_path(args.run))
    latent = args.latent if args.latent is not None else select_latents(store, cfg)[0]
    act, neg = scoring_examples(store, args.hookpoint, latent, sampling_config(cfg))
    texts = [plain(e) for e in act + neg]
    client = TransformersClient(LLMConfig(model=args.model, batch_size=16))
    prompt = PROMPT.format("words about rivers and the places they flow through")
    client.token_losses([prompt] * 2, texts[:2])  # first forwards of a process are slow: warm up both paths
    direct_losses(client, prompt, texts[:2], 16)
    new, t_new = timed(lambda: client.token_losses([prompt] * len(texts), texts))
    old, t_old = timed(lambda: direct_losses(client, prompt, texts, 16))
    diff = max(abs(a - b) for x, y in zip(new, old) for a, b in zip(x, y))
    n_tok = sum(len(x) for x in new)
    print(f"{args.model}, latent {latent}: {len(texts)} windows, {n_tok} scored tokens")
    print(f"surprisal token_losses: batched {t_new:.1f} s, direct {t_old:.1f} s, speed-up {t_old / t_new:.1f}x, "
          f"max |diff| {diff:.2e} nats")
    digits = client.answer_token_ids(DIGITS)
    items = [_layout(client, "words about rivers and the places they flow through", e) for e in act + neg]
    new, t_new = timed(lambda: client.positional_probs(items, digits))
    old, t_old = timed(lambda: direct_positional(client, items, digits))
    diff = float(max(np.abs(np.array(a) - np.array(b)).max() for a, b in zip(new, old)))
    print(f"simulation positional_probs: batched {t_new:.1f} s, direct {t_old:.1f} s, speed-up "
          f"{t_old / t_new:.1f}x, max |diff| {diff:.2e} (probability), "
          f"{np.mean([len(i) for i, _ in items]):.0f} tokens per sequence")


if __name__ == "__main__":
    main()
