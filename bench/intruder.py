"""Intruder scoring across latent sets (issue 23.1): does it tell SAE latents from neurons and from
random directions? It needs no explanation, so it measures the latents, not an explainer.

    .venv/bin/python bench/intruder.py --run demo --latents 20 \
        --sets mlp_out.15 mlp_neurons.15-topk32 mlp_neurons.15-neurons mlp_out.15-random resid_post.15

For each set: N random latents active enough to test (seeded, as `autointerp score --random N`),
intruder-scored through `run_score` and stored in the run (Browse and the Latent page show them).
Printed per set: latents scored and failed, the mean share of right calls with its 95 % t interval
over latents, against chance 0.2, the Welch difference from the first set, and seconds per latent.
A rerun reuses stored scores (pass --force to redo them).
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

from autointerp.analysis.stats import welch_ci  # noqa: E402
from autointerp.config import InterpretConfig  # noqa: E402
from autointerp.runs.interpret import run_score, select_latents  # noqa: E402
from autointerp.llm import make_client  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.score.metrics import t_ci  # noqa: E402
from autointerp.config import SCORER_SPECS  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402

INTRUDER_CHANCE = SCORER_SPECS["intruder"].chance


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=20)
    ap.add_argument("--sets", nargs="+", required=True, help="latent sets; the first is the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    client = make_client(LLMConfig(backend=args.backend, model=args.model))
    store = RunStore(run_path(args.run))
    values: dict[str, list[float]] = {}
    print(f"run {args.run}, scorer {client.name}, {args.latents} random latents per set, chance {INTRUDER_CHANCE:.2f}")
    print("| latent set | scored | failed | share right, mean [95% t] | − first set [95% Welch] | s / latent |")
    print("|---|---|---|---|---|---|")
    for hp in args.sets:
        cfg = InterpretConfig(run=args.run, hookpoint=hp, random=args.latents, scorers=["intruder"],
                              model=args.model, backend=args.backend, seed=args.seed, force=args.force, chunk=4)
        latents = select_latents(store, cfg)
        t0 = time.perf_counter()
        written = run_score(cfg, client=client)
        seconds = (time.perf_counter() - t0) / max(1, len(written))
        cur = store.current_scores(hp)
        cur = cur[(cur.scorer == "intruder") & cur.latent.isin(latents)]
        ok = cur[cur.error.isna() & cur.accuracy.notna()]
        values[hp] = ok.accuracy.astype(float).tolist()
        mean, lo, hi = t_ci(values[hp])
        ref = values[args.sets[0]]
        diff = "–" if hp == args.sets[0] else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*welch_ci(values[hp], ref))
        rate = f"{seconds:.1f}" if written else "(stored)"
        print(f"| {hp} | {len(ok)} | {len(cur) - len(ok)} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | {rate} |",
              flush=True)


if __name__ == "__main__":
    main()
