"""Latents per hour of the demo's explainer/scorer, per CPU engine, side by side in one run.

    .venv/bin/python bench/engines.py [--latents 2] [--run demo] [--hookpoint resid_post.15]

Each engine runs in a child process (its own environment, so torch's instruction set can be
limited there): the model loads, then the real pipeline explains the same seeded latents and scores
them with detection, fuzzing and embedding (explain_latents, score_latent: the demo's defaults,
nothing written). Printed per engine: the raw forward speed at a scoring-sized batch (tokens/s),
seconds per latent for explain and for the three scorers, and latents/h for the four together.

Engines: Qwen2.5-Coder-1.5B through transformers in bfloat16 and float32 on this CPU, and both again
with torch limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2,
ATEN_CPU_CAPABILITY=avx2), the way this machine approximates an AVX2-only one. A row for torch's
dynamic int8 quantisation (onednn engine) gives its raw forward speed only: it is a candidate,
not an engine the package offers. The issue's targets: >= 300 latents/h on AMX, >= 100 on AVX2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child import TORCH_AVX2, cpu_line  # noqa: E402

AVX2 = TORCH_AVX2
ENGINES = [  # (label, dtype, environment, pipeline measured)
    ("transformers bfloat16", "bfloat16", {}, True),
    ("transformers float32", "float32", {}, True),
    ("transformers float32, torch limited to AVX2", "float32", AVX2, True),
    ("transformers bfloat16, torch limited to AVX2", "bfloat16", AVX2, False),
    ("torch dynamic int8 (onednn), forward only", "int8", {}, False),
    ("torch dynamic int8 (onednn), AVX2, forward only", "int8", AVX2, False),
]
SCORERS = ["detection", "fuzzing", "embedding"]
FORWARD_SHAPE = (4, 128)  # a scoring call: a few suffixes over a shared prefix, ~500 tokens in all


def forward_tok_per_s(model, reps: int = 2) -> float:
    import torch

    base = getattr(model, model.base_model_prefix)
    ids = torch.randint(100, 20000, FORWARD_SHAPE)
    with torch.inference_mode():
        base(input_ids=ids)
        t0 = time.perf_counter()
        for _ in range(reps):
            base(input_ids=ids)
    return FORWARD_SHAPE[0] * FORWARD_SHAPE[1] * reps / (time.perf_counter() - t0)


def child(args) -> dict:
    import torch

    from autointerp.config import InterpretConfig
    from autointerp.explain.explainers import explain_latents
    from autointerp.runs.interpret import sampling_config, explain_config, score_latent, scoring_models, select_latents
    from autointerp.llm.base import LLMConfig
    from autointerp.llm.transformers_backend import TransformersClient
    from autointerp.store import RunStore, run_path

    out: dict = {"isa": torch.backends.cpu.get_cpu_capability()}
    if args.dtype == "int8":
        from autointerp.models.subject import load_causal_lm

        torch.backends.quantized.engine = "onednn"
        model, _ = load_causal_lm(args.model, "float32", "cpu")
        model = torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)
        return {**out, "forward_tok_s": forward_tok_per_s(model)}
    t0 = time.perf_counter()
    client = TransformersClient(LLMConfig(backend="transformers", model=args.model, dtype=args.dtype, device="cpu"))
    out.update(engine=client.engine, load_s=time.perf_counter() - t0, forward_tok_s=forward_tok_per_s(client.model))
    if not args.pipeline:
        return out
    store = RunStore(run_path(args.run))
    cfg = InterpretConfig(run=args.run, hookpoint=args.hookpoint, random=args.latents, model=args.model,
                          dtype=args.dtype, scorers=SCORERS)
    latents = select_latents(store, cfg)[:args.latents]
    _, embedder = scoring_models(cfg, client)
    t0 = time.perf_counter()
    rows = explain_latents(client, store, args.hookpoint, latents, sampling_config(cfg), explain_config(cfg))
    explain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_scores = 0
    for r in rows:
        if r["explanation"]:
            scores, _ = score_latent(client, store, args.hookpoint, r["latent"], r["explanation"], cfg, embedder)
            n_scores += sum(s.get("error") is None for s in scores)
    score_s = time.perf_counter() - t0
    n = len(latents)
    return {**out, "latents": latents, "explained": sum(r["explanation"] is not None for r in rows),
            "scores": n_scores, "explain_s_per_latent": explain_s / n, "score_s_per_latent": score_s / n,
            "latents_per_h": 3600 * n / (explain_s + score_s)}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen1.5b")
    ap.add_argument("--run", default="demo")
    ap.add_argument("--hookpoint", default="resid_post.15")
    ap.add_argument("--latents", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    print(cpu_line(), flush=True)
    results = []
    for label, dtype, env, pipeline in ENGINES:
        cmd = [sys.executable, __file__, "--child", "--dtype", dtype, "--model", args.model, "--run", args.run,
               "--hookpoint", args.hookpoint, "--latents", str(args.latents)] + (["--pipeline"] if pipeline else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{label}: FAILED\n{proc.stderr[-1500:]}", flush=True)
            continue
        got = json.loads(line[7:])
        r = {**got, "engine": label, "recorded_engine": got.get("engine"), "wall_s": time.perf_counter() - t0}
        results.append(r)
        print(json.dumps(r), flush=True)
    print(f"\n| engine | torch ISA | forward tok/s {FORWARD_SHAPE[0]}x{FORWARD_SHAPE[1]} | explain s/latent | "
          f"detection+fuzzing+embedding s/latent | latents/h |\n|---|---|---|---|---|---|")
    for r in results:
        if "latents_per_h" in r:
            print(f"| {r['engine']} | {r['isa']} | {r['forward_tok_s']:.0f} | {r['explain_s_per_latent']:.1f} | "
                  f"{r['score_s_per_latent']:.1f} | {r['latents_per_h']:.0f} |")
        else:
            print(f"| {r['engine']} | {r['isa']} | {r['forward_tok_s']:.0f} | - | - | - |")


if __name__ == "__main__":
    main()
