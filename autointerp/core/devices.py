"""Where models run and in which dtype: `--device auto|cpu|cuda[:N]` and `--dtype auto|...`.

Every model load (subject, coders, explainer/scorer, steering, SAE training) resolves its dtype
here. auto on a GPU is bfloat16 where supported (else float16). On a CPU machines differ by 10-30x
(bfloat16 is 2.5x float32 with AMX, slower than float32 on AMD AVX-512 without AMX at small widths,
0.03x on AVX2-only CPUs). Where the CPU's flags settle it (cpu_flag_verdict) they decide: AMX ->
bfloat16, no bfloat16 instructions at all (AVX2, AVX-512 without AVX512-BF16, or torch limited to
such an ISA) -> float32. Only the class in between (AVX512-BF16 without AMX) is measured: a probe
of 0.4-2.5 s times a small MLP block of the model's width in both dtypes and keeps bfloat16 only
where it wins clearly, cached per machine (CPU, ISA limits, torch version, threads) in
data/machine/dtype-probe.json. Flags first because the probe is load-sensitive: on an AMX machine
under a test suite it once read 1.08x at width 1024 (float32 chosen, Qwen 2-4x slower) where a
re-run a minute later read 4.35x. bench/cache.py prints the bf16 vs fp32 line for a whole model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from autointerp.core.errors import AutointerpError

log = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float16", "float32")
# bfloat16 must beat float32 by this factor in the probe: whole models run norms, softmax and
# casts beside the matmuls, where bfloat16 gains less (an AVX-512 EPYC without AMX was slower in
# bfloat16 on the whole demo cache), so a marginal matmul win is not enough.
BF16_MIN_SPEEDUP = 1.3
PROBE_WIDTH = 576  # SmolLM2-135M, the embedded subject, when the caller does not know the model
# Wider models are probed at this width: one bfloat16 pass at width 1536 takes 5 s on an AVX2 CPU,
# and by 1024 the matmuls dominate the block as they do the model.
PROBE_MAX_WIDTH = 1024
# Environment variables that change which CPU kernels torch runs (and so the verdict).
_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_class() -> str:
    """A short description of the CPU's matrix features: 'AMX', 'AVX-512 + AVX512-BF16', 'AVX-512',
    'AVX2' (for benchmark tables and the run's metadata)."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512 + AVX512-BF16" if "avx512_bf16" in flags else "AVX-512"
    return "AVX2" if "avx2" in flags else (platform.machine() or "unknown")


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(width: int) -> str:
    """What the probe's verdict depends on: CPU, its flags, ISA limits, torch and the thread count."""
    parts = [cpu_name(), " ".join(sorted(cpu_flags())), torch.__version__, str(torch.get_num_threads()), str(width),
             *(f"{k}={os.environ.get(k, '')}" for k in _ISA_ENV)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def resolve_device(spec: str = "auto") -> str:
    """'cpu', 'cuda' or 'cuda:N' after checking a GPU is there; one-line errors otherwise."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if index and not index.isdigit():
            raise AutointerpError(f"--device {spec}: write cuda or cuda:N with N a GPU index")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise AutointerpError(f"--device {spec}: torch sees no CUDA GPU on this machine: use --device cpu "
                                  f"(or auto)")
        if index and int(index) >= n:
            raise AutointerpError(f"--device {spec}: torch sees {n} CUDA GPU(s), numbered 0..{n - 1}")
        return spec
    raise AutointerpError(f"unknown --device {spec!r}: use auto, cpu, cuda or cuda:N")


def resolve_dtype(spec: str = "auto", device: str = "cpu", width: int | None = None) -> str:
    """A torch dtype name. auto: bfloat16 on a GPU that supports it (else float16); on a CPU the
    measured verdict of cpu_bf16_probe (bfloat16 only where it runs >= BF16_MIN_SPEEDUP x float32)."""
    spec = (spec or "auto").strip().lower()
    if spec in DTYPES:
        return spec
    if spec != "auto":
        raise AutointerpError(f"unknown dtype {spec!r}: use auto or one of {', '.join(DTYPES)}")
    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    settled = cpu_flag_verdict(cpu_flags(), {k: os.environ.get(k, "") for k in _ISA_ENV})
    return settled if settled is not None else probe_verdict(width)


def probe_verdict(width: int | None = None) -> str:
    """The measured verdict (cpu_bf16_probe at the model's width, capped at PROBE_MAX_WIDTH)."""
    probe_width = min(width or PROBE_WIDTH, PROBE_MAX_WIDTH)
    return "bfloat16" if cpu_bf16_probe(probe_width)["speedup"] >= BF16_MIN_SPEEDUP else "float32"


def cpu_flag_verdict(flags: frozenset[str] | set[str], isa_env: dict[str, str]) -> str | None:
    """bfloat16 or float32 where the CPU flags (and torch's ISA limits) settle --dtype auto; None
    where only the probe can tell (AVX512-BF16 without AMX, or flags unknown: another OS, ARM)."""
    if not flags:
        return None
    onednn = isa_env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    mkl = isa_env.get("MKL_ENABLE_INSTRUCTIONS", "").strip().upper()
    unlimited = onednn in ("", "ALL", "DEFAULT")
    # torch limited to an ISA without bfloat16 (how an AVX2-only CPU is approximated) counts as one
    bf16_allowed = (unlimited or any(t in onednn for t in ("BF16", "AMX", "AVX10"))) and mkl not in ("AVX2", "AVX",
                                                                                                     "SSE4_2")
    if not ("amx_bf16" in flags or "avx512_bf16" in flags) or not bf16_allowed:
        return "float32"  # no bfloat16 instructions to run on: measured 0.01-0.1x float32
    if "amx_bf16" in flags and (unlimited or "AMX" in onednn):
        return "bfloat16"  # AMX: measured 2.5x float32 on the whole demo cache, 2.5-4.4x in the probe
    return None


def probe_path() -> Path:
    from autointerp.core.paths import data_dir

    return data_dir() / "machine" / "dtype-probe.json"


def cpu_bf16_probe(width: int = PROBE_WIDTH) -> dict:
    """{"speedup": bf16 throughput / fp32 throughput, ...} for an MLP block of `width` on this CPU,
    read from data/machine/dtype-probe.json when this machine (machine_key) measured it before."""
    key = machine_key(width)
    path = probe_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    result = _cached_measure(key, width)
    known[key] = result
    from autointerp.core.atomic import atomic_write_json

    try:  # a read-only data folder only costs a re-measure next time
        atomic_write_json(path, known)
    except OSError as e:
        log.warning("could not store the dtype probe in %s (%s); it is measured again next time", path, e)
    return result


@functools.cache
def _cached_measure(key: str, width: int) -> dict:
    result = measure_bf16_speedup(width)
    log.info("dtype probe (%s, width %d): bfloat16 runs at %.2fx float32 -> --dtype auto is %s on this CPU",
             cpu_class(), width, result["speedup"],
             "bfloat16" if result["speedup"] >= BF16_MIN_SPEEDUP else "float32")
    return result


def measure_bf16_speedup(width: int = PROBE_WIDTH, budget_s: float = 0.6) -> dict:
    """Time a transformer MLP block (RMS norm, up and gate projections, SiLU, down projection) on
    32 tokens in float32 and bfloat16, alternating, for about budget_s seconds after a warm-up pass.
    Where bfloat16 has no fast kernels a single pass can take seconds (AVX2: 0.01-0.1x float32),
    so a warm pass that alone overruns half the budget is the measurement. Returns tokens/s and ratio."""
    gen = torch.Generator().manual_seed(0)
    hidden = 4 * width
    tokens = 32
    weights32 = [torch.randn(width, hidden, generator=gen) / width ** 0.5,
                 torch.randn(width, hidden, generator=gen) / width ** 0.5,
                 torch.randn(hidden, width, generator=gen) / hidden ** 0.5]
    x32 = torch.randn(tokens, width, generator=gen)

    def block(x, up, gate, down):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        return (torch.nn.functional.silu(x @ gate) * (x @ up)) @ down

    # Passes alternate between the dtypes and each dtype's fastest pass is its rate: other work on
    # the machine only ever slows a pass, so the minimum is the least disturbed reading, and
    # alternating exposes both dtypes to the same load (timing one block after the other measured
    # bf16/fp32 0.87 and 2.74 at width 576 on one machine, minutes apart, under load).
    args = {name: ([w.to(dtype) for w in weights32], x32.to(dtype))
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, (ws, x) in args.items():
            block(x, *ws)  # warm-up: kernel selection (oneDNN compiles bf16 kernels here) and first touch
            t0 = time.perf_counter()
            block(x, *ws)
            best[name] = time.perf_counter() - t0
        # a warm pass that alone overruns half the budget is hopeless: its own rate is (at most) the answer
        live = [name for name in args if best[name] < budget_s / 2]
        n, t_start = 0, time.perf_counter()
        while live and time.perf_counter() - t_start < budget_s and n < 500:
            for name in live:
                ws, x = args[name]
                t0 = time.perf_counter()
                block(x, *ws)
                best[name] = min(best[name], time.perf_counter() - t0)
            n += 1
    rates = {name: tokens / t for name, t in best.items()}
    return {"float32_tok_s": round(rates["float32"]), "bfloat16_tok_s": round(rates["bfloat16"]),
            "speedup": round(rates["bfloat16"] / rates["float32"], 3), "cpu": cpu_name(), "cpu_class": cpu_class(),
            "width": width, "threads": torch.get_num_threads(),
            "isa_limits": {k: os.environ[k] for k in _ISA_ENV if k in os.environ}}
