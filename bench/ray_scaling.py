"""CPU scaling over Ray: the same cache and the same scoring in one process, on 1 worker, on 2.

    .venv/bin/python bench/ray_scaling.py [--tokens 32768] [--latents 8] [--model smollm2]

Starts a local Ray cluster on 127.0.0.1 (a head with no CPUs, and worker nodes with one CPU each,
added as the phases need them), so a worker is one node with one core. Phases, each timed
wall-clock including the workers' model loading:
  cache: the demo's resid_post.15 SAE over --tokens corpus tokens (8 parts), into a fresh run;
  score: detection + fuzzing of --latents demo latents (their stored explanations), chunks of 2.
The single-process lines use both cores in one process (torch threads), the usual way to run on
one machine. Prints each phase's time and the 2-worker / 1-worker speed-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autointerp.runs.cache import cache_run  # noqa: E402
from autointerp.config import CacheConfig, InterpretConfig  # noqa: E402
from autointerp.runs.interpret import explanation_dict, run_score  # noqa: E402
from autointerp.store import RunStore, append_results, run_path  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
PORT = 6391


def ray_start(*args: str) -> None:
    subprocess.run([RAY, "start", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
                    "--disable-usage-stats", "--num-gpus=0", *args], check=True, capture_output=True)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def score_copy(src: Path, dest: Path, hookpoint: str, latents: list[int], expl: dict[int, str]) -> Path:
    """The demo run's files that scoring one set reads, and the chosen latents' explanations."""
    dest.mkdir(parents=True)
    for name in ("run.json", "tokens.parquet", "token_strings.parquet", "tokens.npy"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)
    shutil.copytree(src / "acts" / hookpoint, dest / "acts" / hookpoint)
    append_results(dest, "explanations", [{"hookpoint": hookpoint, "latent": x, "explanation": expl[x],
                                           "model": "bench"} for x in latents])
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--latents", type=int, default=8)
    ap.add_argument("--model", default="smollm2", help="the scorer LM")
    ap.add_argument("--hookpoint", default="resid_post.15")
    args = ap.parse_args()
    sae = ROOT / "data" / "saes" / "smollm2-4096x32" / args.hookpoint
    demo = run_path("demo")
    expl = explanation_dict(RunStore(demo).explanations(args.hookpoint, kind="input"))
    latents = sorted(expl)[: args.latents]
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    address = f"127.0.0.1:{PORT}"
    cache = CacheConfig(model="smollm2", coders=[f"sae:{sae}"], tokens=args.tokens, ctx_len=64,
                        part_contexts=args.tokens // 64 // 8, batch_contexts=32)
    score = InterpretConfig(hookpoint=args.hookpoint, model=args.model, latents=latents, chunk=2,
                            scorers=["detection", "fuzzing"])
    results: dict[str, dict[str, float]] = {"cache": {}, "score": {}}
    print(f"{os.cpu_count()} CPUs; cache {args.tokens} tokens of {args.hookpoint}; score {len(latents)} latents "
          f"(detection + fuzzing, {args.model}, chunks of 2)")
    results["cache"]["single process"] = timed(lambda: cache_run(
        CacheConfig(**{**cache.__dict__, "run": str(tmp / "cache-single")})))
    results["score"]["single process"] = timed(lambda: run_score(InterpretConfig(**{
        **score.__dict__, "run": str(score_copy(demo, tmp / "score-single", args.hookpoint, latents, expl))})))
    try:
        ray_start("--head", f"--port={PORT}", "--num-cpus=0", "--include-dashboard=false")
        for workers in (1, 2):
            ray_start(f"--address={address}", "--num-cpus=1")  # one more one-core node
            label = f"{workers} worker{'s' if workers > 1 else ''}"
            results["cache"][label] = timed(lambda: cache_run(CacheConfig(**{
                **cache.__dict__, "run": str(tmp / f"cache-{workers}"), "ray": address, "ray_workers": workers})))
            run = score_copy(demo, tmp / f"score-{workers}", args.hookpoint, latents, expl)
            results["score"][label] = timed(lambda: run_score(InterpretConfig(**{
                **score.__dict__, "run": str(run), "ray": address, "ray_workers": workers})))
    finally:
        import ray

        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    for phase, times in results.items():
        line = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        print(f"{phase}: {line}; 2 workers vs 1: {times['1 worker'] / times['2 workers']:.2f}x")


if __name__ == "__main__":
    main()
