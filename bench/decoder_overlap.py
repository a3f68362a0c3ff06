"""Decoder overlap of the demo SAEs at adjacent layers: the Hungarian match against the Gaussian
null with B's mean and covariance (the study's baseline since issue 20) and, beside it, the old
coordinate-shuffle baseline. Reads the SAE folders shipped in data/saes; no run needed.

    .venv/bin/python bench/decoder_overlap.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sae_lens import SAE

from autointerp.analysis.overlap import _unit, hungarian, match_decoders

ROOT = Path(__file__).resolve().parents[1] / "data" / "saes" / "smollm2-4096x32"
PAIRS = (("resid_post.14", "resid_post.15"), ("resid_post.15", "resid_post.16"), ("mlp_out.14", "mlp_out.15"),
         ("mlp_out.15", "mlp_out.16"))


def decoder(hookpoint: str) -> np.ndarray:
    return SAE.load_from_disk(str(ROOT / hookpoint), dtype="float32").W_dec.detach().numpy()


def shuffled_baseline(wa: np.ndarray, wb: np.ndarray, seed: int = 0) -> float:
    """The old baseline: B's vectors with their coordinates shuffled, matched to A."""
    ub = _unit(wb)
    rng = np.random.default_rng(seed)
    sim = _unit(wa) @ np.take_along_axis(ub, rng.random(ub.shape).argsort(axis=1), axis=1).T
    rows, cols = hungarian(sim)
    return float(sim[rows, cols].mean())


def main() -> None:
    for a, b in PAIRS:
        t0 = time.time()
        wa, wb = decoder(a), decoder(b)
        s = match_decoders(wa, wb, seed=0).summary()
        print(f"{a} -> {b}: matched {s['matched_mean']:.3f} [{s['matched_lo']:.3f}, {s['matched_hi']:.3f}], "
              f"Gaussian null {s['baseline_mean']:.3f}, excess {s['excess_mean']:+.3f} "
              f"[{s['excess_lo']:+.3f}, {s['excess_hi']:+.3f}], old shuffled baseline "
              f"{shuffled_baseline(wa, wb):.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
