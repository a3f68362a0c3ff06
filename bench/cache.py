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
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from child import run_json_child  # noqa: E402


def demo_coders() -> list[str]:
    from autointerp.config import DemoConfig
    from autointerp.demo import demo_sae_dir

    cfg = DemoConfig()
    sae_dir = demo_sae_dir(cfg)
    missing = [h for h in cfg.hookpoints if not (sae_dir / h / "sae_weights.safetensors").exists()]
    if missing:
        sys.exit(f"error: demo SAEs missing for {missing}: run `autointerp demo` first")
    return [f"sae:{sae_dir / h}" for h in cfg.hookpoints] + [f"topk:{cfg.k}@{cfg.neuron_baseline}"]


def child_bare(tokens: int, one: bool = False, dtype: str = "auto") -> dict:
    import torch

    from autointerp.models.coders import CoderSpec, build_coder
    from autointerp.models.corpus import load_texts, tokenize_contexts
    from autointerp.models.subject import load_subject

    subject = load_subject("smollm2", dtype=dtype)
    coders = demo_coders()[1:2] if one else demo_coders()
    hookpoints = sorted({build_coder(CoderSpec.parse(c), subject).hookpoint for c in coders})
    contexts = tokenize_contexts(load_texts("wiki"), subject.tokenizer, 64, tokens)
    subject.activations(torch.zeros(8, 65, dtype=torch.long), ["resid_post.16"])  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(contexts), 64):
        subject.activations(torch.from_numpy(contexts[start:start + 64]).long(), hookpoints)
    dt = time.perf_counter() - t0
    return {"tok_per_s": contexts.shape[0] * 64 / dt, "seconds": dt, "hookpoints": hookpoints}


def child_cache(tokens: int, one: bool = False, dtype: str = "auto") -> dict:
    import torch

    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig
    from autointerp.models.subject import load_subject

    subject = load_subject("smollm2", dtype=dtype)
    subject.activations(torch.zeros(8, 65, dtype=torch.long), ["resid_post.16"])  # same warm-up as bare
    with tempfile.TemporaryDirectory() as tmp:
        coders = demo_coders()[1:2] if one else demo_coders()
        cfg = CacheConfig(run=str(Path(tmp) / "bench"), coders=coders, tokens=tokens, coder_dtype=dtype)
        t0 = time.perf_counter()
        cache_run(cfg, subject=subject)
        total = time.perf_counter() - t0
        info = json.loads((Path(tmp) / "bench" / "run.json").read_text())
    # stream_stats times the caching loop (forward + encode + write), as the bare run times its loop
    return {"stream_tok_per_s": info["stream_stats"]["tok_per_s"], "end_to_end_tok_per_s": info["n_tokens"] / total,
            "total_seconds": total}


def run_child(mode: str, tokens: int, one: bool = False, dtype: str = "auto") -> dict:
    return run_json_child(__file__, mode, "--tokens", str(tokens), "--dtype", dtype, *["--one"] * one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=65_536)
    ap.add_argument("--big-tokens", type=int, default=262_144)
    ap.add_argument("--child", choices=["bare", "cache"])
    ap.add_argument("--one", action="store_true", help="(child) only the resid_post.15 SAE")
    ap.add_argument("--dtype", default="auto", help="subject and SAE dtype (auto: measured on this machine)")
    ap.add_argument("--dtype-only", action="store_true", help="only the bf16 vs fp32 line (--tokens tokens)")
    args = ap.parse_args()
    if args.child:
        result = (child_bare(args.tokens, args.one, args.dtype) if args.child == "bare"
                  else child_cache(args.tokens, args.one, args.dtype))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.dtype_only:
        dtype_line(args.tokens)
        return
    dtype = args.dtype
    bare = run_child("bare", args.big_tokens, dtype=dtype)
    small = run_child("cache", args.tokens, dtype=dtype)
    big = run_child("cache", args.big_tokens, dtype=dtype)
    bare1, one = (run_child("bare", args.big_tokens, True, dtype=dtype),
                  run_child("cache", args.big_tokens, True, dtype=dtype))
    print(f"throughput over {args.big_tokens} tokens (SmolLM2-135M, --dtype {dtype}, 64 contexts x 65 tokens per "
          f"batch):")
    print(f"  demo coders: 4 SAEs (4096 latents, k=32) + top-k neurons at {', '.join(bare['hookpoints'])}")
    print(f"    bare truncated forward        {bare['tok_per_s']:7.0f} tok/s")
    print(f"    cache, streaming loop         {big['stream_tok_per_s']:7.0f} tok/s   "
          f"ratio {big['stream_tok_per_s'] / bare['tok_per_s']:.3f}  (target >= 0.85)")
    print(f"    cache, end to end incl. sort  {big['end_to_end_tok_per_s']:7.0f} tok/s   "
          f"ratio {big['end_to_end_tok_per_s'] / bare['tok_per_s']:.3f}")
    print("  one SAE (resid_post.15):")
    print(f"    bare truncated forward        {bare1['tok_per_s']:7.0f} tok/s")
    print(f"    cache, streaming loop         {one['stream_tok_per_s']:7.0f} tok/s   "
          f"ratio {one['stream_tok_per_s'] / bare1['tok_per_s']:.3f}")
    print(f"peak RSS caching {args.tokens:>8} tokens: {small['peak_rss_mb']:7.0f} MB")
    print(f"peak RSS caching {args.big_tokens:>8} tokens: {big['peak_rss_mb']:7.0f} MB   "
          f"ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f} for {args.big_tokens / args.tokens:.0f}x the tokens")
    dtype_line(args.tokens)


def dtype_line(tokens: int) -> None:
    """bfloat16 vs float32 for the subject and the demo coders on this machine (the table row of
    docs/benchmarks.md: CPU, its matrix features, ISA limits), the dtype probe's own ratio, and what
    `--dtype auto` picks here."""
    import os

    from autointerp.core.devices import cpu_bf16_probe, cpu_class, cpu_name, resolve_dtype

    bf16, fp32 = run_child("cache", tokens, dtype="bfloat16"), run_child("cache", tokens, dtype="float32")
    ratio = bf16["stream_tok_per_s"] / fp32["stream_tok_per_s"]
    limits = " ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
                      if k in os.environ) or "none"
    print(f"| {cpu_name()} | {cpu_class()} | ISA limits: {limits} | demo coders, {tokens} tokens | "
          f"bf16 {bf16['stream_tok_per_s']:.0f} tok/s | fp32 {fp32['stream_tok_per_s']:.0f} tok/s | "
          f"bf16/fp32 {ratio:.2f} | probe bf16/fp32 {cpu_bf16_probe()['speedup']:.2f} | "
          f"--dtype auto: {resolve_dtype('auto', 'cpu')} |")


if __name__ == "__main__":
    main()
