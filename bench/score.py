"""Cost of explaining and scoring on the CPU default backend.

    .venv/bin/python bench/score.py [--model qwen1.5b] [--run demo] [--hookpoint resid_post.15] [--latents 3]

For the N most frequent latents of the run: seconds per explanation; per scorer, prompt tokens per
example and seconds per scored example; detection in logprob mode vs generate mode (cost ratio);
latents per hour for explain + detection + fuzzing; embedding, surprisal and simulation cost
per scored example. One process, same latents and examples for
every measurement. Compare with the paper's 5-examples-per-prompt setup (--per-prompt) and the
target of <= 0.3 s per example with the 1.5B model.
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

from autointerp.explain.explainers import ExplainConfig, explain_latents  # noqa: E402
from autointerp.llm.base import LLMConfig  # noqa: E402
from autointerp.llm.transformers_backend import TransformersClient  # noqa: E402
from autointerp.explain.prompts import DETECTION_SYSTEM, plain, scorer_messages  # noqa: E402
from autointerp.explain.sampling import SamplingConfig, explanation_examples, scoring_examples  # noqa: E402
from autointerp.models.embedder import load_embedder  # noqa: E402
from autointerp.score.classify import ClassifyConfig, score_classify  # noqa: E402
from autointerp.score.embedding import score_embedding  # noqa: E402
from autointerp.score.simulation import score_simulation  # noqa: E402
from autointerp.score.surprisal import score_surprisal  # noqa: E402
from autointerp.store import RunStore, run_path  # noqa: E402


def main() -> None:
    ap = llm_bench_parser(__doc__, latents=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    store = RunStore(run_path(args.run))
    page, _ = store.latent_table(args.hookpoint, sort="frequency", limit=args.latents)
    latents = page.latent.tolist()
    client = TransformersClient(LLMConfig(model=args.model, batch_size=args.batch_size))
    sampling = SamplingConfig(n_explain=20, test_per_quantile=2, n_negative=20)

    t0 = time.perf_counter()
    rows = explain_latents(client, store, args.hookpoint, latents, sampling, ExplainConfig())
    explain_s = (time.perf_counter() - t0) / len(latents)
    print(f"model {args.model}, {len(latents)} latents of {args.hookpoint}, {args.per_prompt} examples per prompt")
    print(f"explain: {explain_s:.1f} s per latent ({sum(r['explanation'] is None for r in rows)} failures)")

    embedder = load_embedder()
    embedder.encode(["warm-up"])
    cost: dict[str, list[float]] = {}
    n_examples = 0
    for row, latent in zip(rows, latents):
        expl = row["explanation"] or "unknown"
        shown = explanation_examples(store, args.hookpoint, latent, sampling)
        act, neg = scoring_examples(store, args.hookpoint, latent, sampling, exclude=shown)
        n = len(act) + len(neg)
        n_examples += n
        tokens = len(client.token_ids(client.chat_text(scorer_messages(DETECTION_SYSTEM, expl,
                                                                  [plain(e) for e in (act + neg)[:args.per_prompt]]))))
        cost.setdefault("prompt tokens per example", []).append(tokens / args.per_prompt)
        for scorer, mode in (("detection", "logprob"), ("fuzzing", "logprob"), ("detection", "generate")):
            t0 = time.perf_counter()
            score_classify(scorer, client, expl, act, neg, ClassifyConfig(per_prompt=args.per_prompt, mode=mode))
            cost.setdefault(f"{scorer} {mode}", []).append(time.perf_counter() - t0)
        for scorer, run in (("embedding", lambda: score_embedding(expl, act, neg, embedder)),
                            ("surprisal", lambda: score_surprisal(client, expl, act, neg)),
                            ("simulation", lambda: score_simulation(client, expl, act, neg))):
            t0 = time.perf_counter()
            run()
            cost.setdefault(scorer, []).append(time.perf_counter() - t0)
    per_ex = {k: sum(v) / n_examples for k, v in cost.items() if k != "prompt tokens per example"}
    print(f"prompt tokens per example (detection): {sum(cost['prompt tokens per example']) / len(latents):.0f}")
    for k, v in per_ex.items():
        print(f"{k:20s} {v:.3f} s per scored example")
    print(f"generate / logprob cost ratio (detection): {per_ex['detection generate'] / per_ex['detection logprob']:.2f}")
    per_latent = explain_s + (sum(cost["detection logprob"]) + sum(cost["fuzzing logprob"])) / len(latents)
    print(f"explain + detection + fuzzing: {per_latent:.0f} s per latent = {3600 / per_latent:.0f} latents per hour")


if __name__ == "__main__":
    main()
