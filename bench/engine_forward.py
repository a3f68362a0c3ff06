"""Raw speed of candidate CPU engines for Qwen2.5-Coder-1.5B, side by side in one run: prefill
(what scoring is: P(Yes) after a long prompt) and greedy decode (what explaining adds).

    .venv/bin/python bench/engine_forward.py [--llamacpp-python PATH] [--ct2-dir DIR] [--ort-python PATH]
                                             [--ort-dir DIR]

Each engine runs in a child process with its own environment, natively and with its instruction
set limited to AVX2 (how this machine approximates an AVX2-only CPU):
  torch        transformers' model (float32, bfloat16), the package's engine; AVX2 limit:
               ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
  ctranslate2  int8 weights (converted here from the model folder, ~30 s, into --ct2-dir); AVX2
               limit: CT2_FORCE_CPU_ISA=AVX2 plus MKL_ENABLE_INSTRUCTIONS=AVX2 (its int8 GEMM is
               MKL's, which otherwise picks AMX/VNNI whatever CT2_FORCE_CPU_ISA says)
  llama.cpp    the shipped Q4_K_M GGUF through llama-cpp-python in another interpreter
               (--llamacpp-python); its instruction set is fixed at build time, e.g. an AVX2-only
               build: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
               -DGGML_AVX512=OFF" pip install --no-binary llama-cpp-python llama-cpp-python
  onnxruntime  optimum's ONNX export of the model (float32) and its dynamic int8 quantization, in
               another interpreter (--ort-python, --ort-dir); native only: stock onnxruntime has no
               switch that limits its kernels' instruction set
Neither ctranslate2, llama-cpp-python nor onnxruntime is a dependency of the package: rows whose engine is
not installed are printed as skipped, with the install line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.child import TORCH_AVX2, cpu_line  # noqa: E402

CT2_AVX2 = {"CT2_FORCE_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PREFILL, PROMPT, DECODE = 512, 100, 16  # tokens: one scoring prompt; a prompt before decoding; decoded


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def torch_child(dtype: str) -> dict:
    import torch

    from autointerp.models.subject import load_causal_lm

    model, _ = load_causal_lm("qwen1.5b", dtype=dtype)
    ids = torch.randint(100, 20000, (1, PREFILL))
    with torch.inference_mode():
        model(input_ids=ids[:, :64])
        prefill = max(PREFILL / timed(lambda: model(input_ids=ids)) for _ in range(2))
        out = model(input_ids=ids[:, :PROMPT], use_cache=True)
        t0 = time.perf_counter()
        for _ in range(DECODE):
            out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
        decode = DECODE / (time.perf_counter() - t0)
    return {"prefill_tok_s": prefill, "decode_tok_s": decode}


def ct2_child(ct2_dir: str) -> dict:
    import ctranslate2
    import numpy as np
    from transformers import AutoTokenizer

    from autointerp.models.subject import embedded_model_dir

    src = embedded_model_dir("qwen1.5b")
    if not (Path(ct2_dir) / "model.bin").exists():
        ctranslate2.converters.TransformersConverter(str(src), low_cpu_mem_usage=True).convert(
            ct2_dir, quantization="int8", force=True)
    gen = ctranslate2.Generator(ct2_dir, device="cpu", compute_type="int8", intra_threads=os.cpu_count())
    rng = np.random.default_rng(0)
    ids = rng.integers(100, 20000, PREFILL).tolist()
    gen.forward_batch([ids[:64]])
    prefill = max(PREFILL / timed(lambda: gen.forward_batch([ids])) for _ in range(2))
    tokens = AutoTokenizer.from_pretrained(src).convert_ids_to_tokens(ids[:PROMPT])
    t0 = time.perf_counter()
    sum(1 for _ in gen.generate_tokens(tokens, max_length=1, sampling_topk=1))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(1 for _ in gen.generate_tokens(tokens, max_length=DECODE + 1, sampling_topk=1))
    decode = (n - 1) / max(time.perf_counter() - t0 - first, 1e-9)
    return {"prefill_tok_s": prefill, "decode_tok_s": decode}


LLAMACPP_CHILD = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, prefill_n, prompt_n, decode_n = sys.argv[1], *map(int, sys.argv[2:5])
info = llama_cpp.llama_print_system_info().decode()
import os
llm = Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
ids = np.random.default_rng(0).integers(100, 20000, prefill_n).tolist()
llm.eval(ids[:64])
prefill = 0.0
for _ in range(2):
    llm.reset(); t0 = time.perf_counter(); llm.eval(ids); prefill = max(prefill, prefill_n / (time.perf_counter() - t0))
llm.reset(); llm.eval(ids[:prompt_n])
t0 = time.perf_counter()
for _ in range(decode_n):
    llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
decode = decode_n / (time.perf_counter() - t0)
print(json.dumps({"prefill_tok_s": prefill, "decode_tok_s": decode, "isa": info.split("|")[:8]}))
"""


ORT_CHILD = r"""
import json, os, sys, time
import numpy as np
import onnxruntime as ort
path, prefill_n, prompt_n, decode_n = sys.argv[1], *map(int, sys.argv[2:5])
opts = ort.SessionOptions()
opts.intra_op_num_threads = os.cpu_count()
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
past = [i for i in sess.get_inputs() if i.name.startswith("past_key_values")]
kv_heads, head_dim = past[0].shape[1], past[0].shape[3]
outs = [o.name for o in sess.get_outputs()]

def step(ids, start, cache):
    n = ids.shape[1]
    feed = {"input_ids": ids, "attention_mask": np.ones((1, start + n), np.int64)}
    if "position_ids" in names:
        feed["position_ids"] = np.arange(start, start + n, dtype=np.int64)[None]
    for i, inp in enumerate(past):
        feed[inp.name] = cache[i] if cache else np.zeros((1, kv_heads, 0, head_dim), np.float32)
    got = sess.run(None, feed)
    return got[0], got[1:]

ids = np.random.default_rng(0).integers(100, 20000, (1, prefill_n)).astype(np.int64)
step(ids[:, :64], 0, None)
prefill = 0.0
for _ in range(2):
    t0 = time.perf_counter(); step(ids, 0, None); prefill = max(prefill, prefill_n / (time.perf_counter() - t0))
logits, cache = step(ids[:, :prompt_n], 0, None)
t0 = time.perf_counter()
for k in range(decode_n):
    nxt = np.array([[int(np.argmax(logits[0, -1]))]], np.int64)
    logits, cache = step(nxt, prompt_n + k, cache)
decode = decode_n / (time.perf_counter() - t0)
print(json.dumps({"prefill_tok_s": prefill, "decode_tok_s": decode}))
"""


def run_child(cmd: list[str], env: dict) -> dict | str:
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if proc.returncode == 0 and lines else (proc.stderr or proc.stdout)[-800:]


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamacpp-python", help="an interpreter with llama-cpp-python installed")
    ap.add_argument("--llamacpp-label", default="as built", help="what the llama.cpp build targets, for the table")
    ap.add_argument("--ct2-dir", default="/tmp/autointerp-ct2-qwen-int8")
    ap.add_argument("--engines", nargs="+", default=["torch", "ct2", "ort", "llamacpp"],
                    choices=["torch", "ct2", "ort", "llamacpp"], help="which rows to run (all by default)")
    ap.add_argument("--ort-python", help="an interpreter with onnxruntime installed")
    ap.add_argument("--ort-dir", default="/tmp/autointerp-ort-qwen",
                    help="model.onnx (optimum-cli export onnx --task text-generation-with-past) and "
                         "model_int8.onnx (onnxruntime.quantization.quantize_dynamic, QInt8 weights)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, arg = args.child
        print(json.dumps(torch_child(arg) if kind == "torch" else ct2_child(arg)), flush=True)
        return
    from autointerp.core.paths import QWEN_GGUF_SHA256, QWEN_GGUF_SIZE, qwen_gguf_parts
    from autointerp.models.subject import concat_verified

    print(cpu_line(), flush=True)
    me = [sys.executable, __file__, "--child"]
    rows = [("torch float32", "native", me + ["torch", "float32"], {}),
            ("torch bfloat16", "native", me + ["torch", "bfloat16"], {}),
            ("torch float32", "AVX2", me + ["torch", "float32"], TORCH_AVX2),
            ("torch bfloat16", "AVX2", me + ["torch", "bfloat16"], TORCH_AVX2)] if "torch" in args.engines else []
    try:
        import ctranslate2  # noqa: F401

        if "ct2" in args.engines:
            rows += [("ctranslate2 int8", "native", me + ["ct2", args.ct2_dir], {}),
                     ("ctranslate2 int8", "AVX2", me + ["ct2", args.ct2_dir], CT2_AVX2)]
    except ImportError:
        print("ctranslate2: skipped (pip install ctranslate2)")
    for label, onnx in (("onnxruntime float32", "model.onnx"), ("onnxruntime int8 (dynamic)", "model_int8.onnx")):
        path = Path(args.ort_dir) / onnx
        if "ort" not in args.engines:
            continue
        if args.ort_python and path.exists():
            rows.append((label, "native", [args.ort_python, "-c", ORT_CHILD, str(path), str(PREFILL), str(PROMPT),
                                           str(DECODE)], {}))
        else:
            print(f"{label}: skipped (--ort-python PATH with onnxruntime, and {path}: see --ort-dir)")
    if args.llamacpp_python and "llamacpp" in args.engines:
        gguf = Path(args.ct2_dir).parent / "autointerp-qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        if not gguf.exists():
            concat_verified(qwen_gguf_parts(), gguf, QWEN_GGUF_SHA256, QWEN_GGUF_SIZE)
        rows.append(("llama.cpp Q4_K_M", args.llamacpp_label,
                     [args.llamacpp_python, "-c", LLAMACPP_CHILD, str(gguf), str(PREFILL), str(PROMPT), str(DECODE)], {}))
    else:
        print("llama.cpp: skipped (--llamacpp-python PATH: an interpreter with llama-cpp-python)")
    print(f"\n| engine | instruction set | prefill tok/s ({PREFILL} tokens, best of 2) | decode tok/s |\n|---|---|---|---|")
    for label, isa, cmd, env in rows:
        got = run_child(cmd, env)
        if isinstance(got, str):
            print(f"| {label} | {isa} | failed: {got.strip().splitlines()[-1] if got.strip() else '?'} | |", flush=True)
        else:
            print(f"| {label} | {isa} | {got['prefill_tok_s']:.0f} | {got['decode_tok_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
