"""Peak memory of caching a wide non-top-k SAE (issue 11): a synthetic 131,072-latent ReLU SAE
(sae-lens "standard", random unit encoder columns, bias set for an L0 of about 60) on SmolLM2's
mlp_out.15, cached over two token counts, with the encode in row tiles (the default) and, for
contrast, as one dense [4096 tokens x 131k latents] tensor per batch. Each measurement runs in its
own process; printed ratios are from the same run.

Command: .venv/bin/python bench/large_coder.py [--tokens 16384 --big-tokens 65536]
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

N_LATENTS = 131_072
HOOKPOINT = "mlp_out.15"


def make_sae(folder: Path) -> None:
    """A standard sae-lens SAE with unit encoder columns; b_enc puts the threshold at 4 sigma of a
    typical token's projections (measured on 2,048 real tokens): about 0.05% of 131k, L0 ~60."""
    import torch
    from sae_lens import SAE

    from autointerp.models.corpus import load_texts, tokenize_contexts
    from autointerp.models.subject import load_subject

    subject = load_subject("smollm2", dtype="float32")
    ids = torch.from_numpy(tokenize_contexts(load_texts("wiki"), subject.tokenizer, 64, 2048)).long()
    x = subject.activations(ids, [HOOKPOINT])[HOOKPOINT][:, 1:].reshape(-1, subject.d_model)
    d = subject.d_model
    sae = SAE.from_dict({"architecture": "standard", "d_in": d, "d_sae": N_LATENTS, "dtype": "float32",
                         "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
                         "metadata": {"hook_name": "blocks.15.hook_mlp_out"}})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = torch.randn(d, N_LATENTS, generator=g)
        sae.W_enc.copy_(w / w.norm(dim=0, keepdim=True))
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_enc.fill_(-3.3 * float(x.norm(dim=1).median()) / d ** 0.5)
        sae.b_dec.zero_()
    sae.save_model(str(folder))


def child(folder: str, tokens: int, dense: bool) -> dict:
    import pyarrow.parquet as pq

    from autointerp.models import coders
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig

    if dense:
        coders.DENSE_TILE_ELEMENTS = 1 << 62  # one tile per batch: the dense [batch, latents] encode
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache_run(CacheConfig(run=str(Path(tmp) / "run"), model="smollm2", coders=[f"sae:{folder}"], tokens=tokens,
                              coder_dtype="float32"))
        seconds = time.perf_counter() - t0
        info = json.loads((Path(tmp) / "run" / "run.json").read_text())
        counts = pq.read_table(Path(tmp) / "run" / "acts" / HOOKPOINT / "latents.parquet", columns=["count"])
        l0 = counts.column("count").to_numpy().sum() / info["n_tokens"]
    return {"seconds": seconds, "tok_per_s": info["stream_stats"]["tok_per_s"], "l0": float(l0),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(folder: Path, tokens: int, dense: bool = False) -> dict:
    return run_json_child(__file__, str(folder), "--tokens", str(tokens), *["--dense"] * dense)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--big-tokens", type=int, default=65_536)
    ap.add_argument("--child")
    ap.add_argument("--dense", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.dense)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sae"
        make_sae(folder)
        small, big = run_child(folder, args.tokens), run_child(folder, args.big_tokens)
        dense = run_child(folder, args.tokens, dense=True)
    print(f"synthetic {N_LATENTS}-latent ReLU SAE at {HOOKPOINT} (SmolLM2, float32, 4096-token batches, "
          f"mean L0 {small['l0']:.0f}):")
    print(f"  row tiles, {args.tokens:>7} tokens: peak RSS {small['peak_rss_mb']:6.0f} MB, {small['tok_per_s']} tok/s")
    print(f"  row tiles, {args.big_tokens:>7} tokens: peak RSS {big['peak_rss_mb']:6.0f} MB, "
          f"{big['tok_per_s']} tok/s   ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f} for {args.big_tokens / args.tokens:.0f}x the tokens")
    print(f"  one dense tile per batch, {args.tokens:>7} tokens: peak RSS {dense['peak_rss_mb']:6.0f} MB   "
          f"tiles / dense {small['peak_rss_mb'] / dense['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
