"""Cache throughput vs the bare truncated forward pass, and peak RSS at two corpus sizes.

    .venv/bin/python bench/cache.py [--tokens 65536] [--big-tokens 262144]

Uses the demo's SAEs (run `autointerp demo` first) and top-k neurons, i.e. the demo's coders.
Each measurement runs in its own process so peak RSS is that measurement's alone. Prints:
  bare forward tok/s, cache tok/s (streaming phase and end to end incl. the final sort),
  their ratio (target >= 0.85), and peak RSS of caching --tokens vs --big-tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def demo_coders() -> list[str]:
    from autointerp.config import DemoConfig
    from autointerp.demo import demo_sae_dir

    cfg = DemoConfig()
    sae_dir = demo_sae_dir(cfg)
    missing = [h for h in cfg.hookpoints if not (sae_dir / h / "sae_weights.safetensors").exists()]
    if missing:
        sys.exit(f"error: demo SAEs missing for {missing}: run `autointerp demo` first")
    return [f"sae:{sae_dir / h}" for h in cfg.hookpoints] + [f"topk:{cfg.k}@{cfg.neuron_baseline}"]


def child_bare(tokens: int) -> dict:
    import torch

    from autointerp.coders import CoderSpec, build_coder
    from autointerp.corpus import load_texts, tokenize_contexts
    from autointerp.subject import load_subject

    subject = load_subject("smollm2")
    hookpoints = sorted({build_coder(CoderSpec.parse(c), subject).hookpoint for c in demo_coders()})
    contexts = tokenize_contexts(load_texts("wiki"), subject.tokenizer, 64, tokens)
    subject.activations(torch.from_numpy(contexts[:8]).long(), hookpoints)  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(contexts), 64):
        subject.activations(torch.from_numpy(contexts[start:start + 64]).long(), hookpoints)
    dt = time.perf_counter() - t0
    return {"tok_per_s": contexts.shape[0] * 64 / dt, "seconds": dt, "hookpoints": hookpoints}


def child_cache(tokens: int) -> dict:
    import torch

    from autointerp import cache as cache_mod
    from autointerp.config import CacheConfig
    from autointerp.subject import load_subject

    subject = load_subject("smollm2")
    subject.activations(torch.zeros(8, 65, dtype=torch.long), ["resid_post.16"])  # same warm-up as bare
    stream_s = {}
    finalize = cache_mod.finalize_latent_set

    def timed_finalize(*a, **kw):  # separate the streaming phase from the final sort
        stream_s.setdefault("t", time.perf_counter() - t0)
        return finalize(*a, **kw)

    cache_mod.finalize_latent_set = timed_finalize
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CacheConfig(run=str(Path(tmp) / "bench"), coders=demo_coders(), tokens=tokens)
        t0 = time.perf_counter()
        cache_mod.cache_run(cfg, subject=subject)
        total = time.perf_counter() - t0
        n_tokens = json.loads((Path(tmp) / "bench" / "run.json").read_text())["n_tokens"]
    return {"stream_tok_per_s": n_tokens / stream_s["t"], "end_to_end_tok_per_s": n_tokens / total,
            "stream_seconds": stream_s["t"], "total_seconds": total}


def run_child(mode: str, tokens: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--tokens", str(tokens)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=65_536)
    ap.add_argument("--big-tokens", type=int, default=262_144)
    ap.add_argument("--child", choices=["bare", "cache"])
    args = ap.parse_args()
    if args.child:
        result = child_bare(args.tokens) if args.child == "bare" else child_cache(args.tokens)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    bare = run_child("bare", args.tokens)
    small = run_child("cache", args.tokens)
    big = run_child("cache", args.big_tokens)
    print(f"hookpoints: {', '.join(bare['hookpoints'])}; coders: 4 SAEs (4096 latents, k=32) + top-k neurons")
    print(f"bare truncated forward        {bare['tok_per_s']:8.0f} tok/s   ({args.tokens} tokens)")
    print(f"cache, streaming phase        {small['stream_tok_per_s']:8.0f} tok/s   "
          f"ratio {small['stream_tok_per_s'] / bare['tok_per_s']:.3f}  (target >= 0.85)")
    print(f"cache, end to end incl. sort  {small['end_to_end_tok_per_s']:8.0f} tok/s   "
          f"ratio {small['end_to_end_tok_per_s'] / bare['tok_per_s']:.3f}")
    print(f"peak RSS caching {args.tokens:>8} tokens: {small['peak_rss_mb']:7.0f} MB")
    print(f"peak RSS caching {args.big_tokens:>8} tokens: {big['peak_rss_mb']:7.0f} MB   "
          f"ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f} for {args.big_tokens / args.tokens:.0f}x the tokens")


if __name__ == "__main__":
    main()
