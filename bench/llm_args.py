"""Flags shared by the LLM benchmarks (score.py, validity.py)."""

import argparse


def llm_bench_parser(doc: str, latents: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen1.5b")
    ap.add_argument("--run", default="demo")
    ap.add_argument("--hookpoint", default="resid_post.15")
    ap.add_argument("--latents", type=int, default=latents)
    ap.add_argument("--per-prompt", type=int, default=5)
    return ap
