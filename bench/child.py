"""Shared by the benches: a child process per measurement (`--child ...`, one JSON line last), the
line naming the CPU a run's numbers came from, and this machine's approximation of an AVX2-only CPU
for torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_json_child(script: str, *args: str) -> dict:
    """Run `python script --child *args` and return the JSON object on its last stdout line."""
    out = subprocess.run([sys.executable, script, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# torch limited to AVX2 (oneDNN, MKL and ATen's own kernels): how an AMX/AVX-512 machine stands in for
# an AVX2-only one in torch's numbers
TORCH_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def cpu_line() -> str:
    """'CPU: <model name>, N cores; amx_bf16=.. avx512_bf16=.. avx512f=..' for a bench's first line."""
    from autointerp.core.devices import cpu_flags

    flags = cpu_flags()
    name = next(x for x in open("/proc/cpuinfo").read().splitlines() if x.startswith("model name")).split(":")[1]
    return (f"CPU: {name.strip()}, {os.cpu_count()} cores; amx_bf16={'amx_bf16' in flags} "
            f"avx512_bf16={'avx512_bf16' in flags} avx512f={'avx512f' in flags}")
