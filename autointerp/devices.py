"""Where models run and in which dtype: `--device auto|cpu|cuda[:N]` and `--dtype auto|...`.

auto picks CUDA when torch sees a GPU, else the CPU. The dtype auto rule is measured, not
assumed: bfloat16 is fast on GPUs that support it and on CPUs with AMX (Intel Sapphire Rapids
and later: 5k tokens/s caching the demo), but an AMD EPYC with AVX-512 and no AMX cached at 1.6k
tokens/s in bfloat16, slower than float32; so on CPUs without AMX auto means float32
(bench/cache.py prints the bf16 vs fp32 line for the machine it runs on).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from autointerp.errors import AutointerpError

DTYPES = ("bfloat16", "float16", "float32")


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bfloat16 tiles (the `amx_bf16` flag of /proc/cpuinfo)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


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


def resolve_dtype(spec: str = "auto", device: str = "cpu") -> str:
    """A torch dtype name. auto: bfloat16 on a GPU that supports it or a CPU with AMX, else float32."""
    spec = (spec or "auto").strip().lower()
    if spec in DTYPES:
        return spec
    if spec != "auto":
        raise AutointerpError(f"unknown dtype {spec!r}: use auto or one of {', '.join(DTYPES)}")
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_amx() else "float32"
