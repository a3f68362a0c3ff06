"""Flags and latent choice shared by the LLM benchmarks."""

import argparse

import numpy as np


def llm_bench_parser(doc: str, latents: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen1.5b")
    ap.add_argument("--run", default="demo")
    ap.add_argument("--hookpoint", default="resid_post.15")
    ap.add_argument("--latents", type=int, default=latents)
    ap.add_argument("--per-prompt", type=int, default=5)
    ap.add_argument("--backend", default="transformers", help="the LLM backend (autointerp.llm.BACKENDS): "
                    "transformers, vllm or openai (with --base-url where the bench takes it)")
    return ap


def seeded_subset(latents, n: int, seed: int = 0) -> list[int]:
    """All of `latents` (sorted) when there are at most n, else a seeded choice of n."""
    latents = sorted(int(x) for x in latents)
    if len(latents) <= n:
        return latents
    return sorted(np.random.default_rng(seed).choice(latents, n, replace=False).tolist())
