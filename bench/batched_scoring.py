"""Latents per hour, one latent at a time vs a chunk of latents batched (llm/lockstep.py).

    .venv/bin/python bench/batched_scoring.py [--backend transformers|vllm|openai] [--model qwen1.5b]
        [--latents 8] [--chunk 8] [--scorers detection,fuzzing]

The same latents, explanations and test sets in both phases, one client loaded once. "one at a
time" is how scoring ran before batching: each latent's scorers call the backend on their own;
"batched" sends a chunk's calls together. Prints both rates, their ratio, and the largest score
difference between the phases (batching must not change scores beyond float noise). With vLLM the
engine's prefix cache is reset before each phase, so neither phase reuses the other's prompts
(an OpenAI-compatible server's is not: run the batched phase first there, with --batched-first).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_args import llm_bench_parser  # noqa: E402

from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.runs.interpret import explanation_dict, score_latent  # noqa: E402
from autointerp.llm import make_client  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm.lockstep import run_lockstep  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=8)
    ap.add_argument("--base-url", default=None, help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--scorers", default="detection,fuzzing")
    ap.add_argument("--batched-first", action="store_true", help="time the batched phase first")
    ap.add_argument("--dtype", default="auto", help="transformers backend: auto (measured on this machine), bfloat16 or float32")
    args = ap.parse_args()
    store = RunStore(run_path(args.run))
    expl = explanation_dict(store.explanations(args.hookpoint))
    latents = sorted(expl)[: args.latents]
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, per_prompt=args.per_prompt,
                          scorers=args.scorers.split(","))
    client = make_client(LLMConfig(backend=args.backend, model=args.model, batch_size=args.batch_size,
                                   dtype=args.dtype, base_url=args.base_url))
    client.answer_probs([[{"role": "user", "content": "warm-up"}]], [" Yes", " No"])
    client.combines_latents = True  # measure combining even where the backend leaves it off (CPU transformers)
    print(f"{client.name}, {len(latents)} latents of {args.hookpoint}, scorers {args.scorers}, "
          f"chunk {args.chunk}, batch size {args.batch_size}")

    def phase(chunk: int) -> tuple[float, list]:
        if hasattr(client, "reset_prefix_cache"):
            client.reset_prefix_cache()
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(latents), chunk):
            jobs = [functools.partial(score_latent, store=store, hookpoint=args.hookpoint, latent=x,
                                      explanation=expl[x], cfg=dataclasses.replace(cfg))
                    for x in latents[i:i + chunk]]
            out += run_lockstep(client, jobs)
        return time.perf_counter() - t0, out

    if args.batched_first:
        batched_s, batched = phase(args.chunk)
        alone_s, alone = phase(1)
    else:
        alone_s, alone = phase(1)
        batched_s, batched = phase(args.chunk)
    n_examples = sum(r["n"] for scores, _ in alone for r in scores)
    diffs = [abs((a["auroc"] or 0) - (b["auroc"] or 0))
             for (sa, _), (sb, _) in zip(alone, batched) for a, b in zip(sa, sb)]
    for name, secs in (("one at a time", alone_s), (f"batched ({args.chunk})", batched_s)):
        print(f"{name:>16}: {secs:7.1f} s, {3600 * len(latents) / secs:6.0f} latents/hour, "
              f"{secs / n_examples:.3f} s per scored example")
    print(f"batched / one at a time: {alone_s / batched_s:.2f}x faster; AUROC difference between "
          f"the phases: mean {sum(diffs) / len(diffs):.4f}, largest {max(diffs):.4f} over {len(diffs)} scores")
    if hasattr(client, "close"):
        client.close()


if __name__ == "__main__":
    main()
