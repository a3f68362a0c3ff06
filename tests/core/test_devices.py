"""--device / --dtype: auto follows the hardware (a GPU; on a CPU the measured dtype verdict, see
test_dtype.py), and asking for a GPU the machine does not have is a one-line error before anything
loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autointerp.core import devices
from autointerp.config import CacheConfig
from autointerp.core.errors import AutointerpError


def test_auto_device_is_the_cpu_without_a_gpu_and_cuda_is_refused_in_one_line():
    if torch.cuda.is_available():  # a GPU machine: auto takes it, and an index past the last is refused
        assert devices.resolve_device("auto") == "cuda"
        with pytest.raises(AutointerpError, match="numbered 0"):
            devices.resolve_device(f"cuda:{torch.cuda.device_count()}")
        return
    assert devices.resolve_device("auto") == "cpu" and devices.resolve_device("cpu") == "cpu"
    for spec in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(AutointerpError, match="no CUDA GPU") as e:
            devices.resolve_device(spec)
        assert "\n" not in str(e.value) and "--device cpu" in str(e.value)
    with pytest.raises(AutointerpError, match="unknown --device"):
        devices.resolve_device("tpu")


def test_cpu_class_names_the_matrix_features_of_proc_cpuinfo():
    flags = set(next((line.partition(":")[2].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), []))
    expected = ("AMX" if "amx_bf16" in flags else
                ("AVX-512 + AVX512-BF16" if "avx512_bf16" in flags else "AVX-512") if "avx512f" in flags else
                "AVX2" if "avx2" in flags else None)
    assert devices.cpu_flags() == frozenset(flags)
    if expected:
        assert devices.cpu_class() == expected


def test_cache_with_cuda_on_a_cpu_machine_stops_before_writing(tmp_path):
    from autointerp.runs.cache import cache_run

    with pytest.raises(AutointerpError, match="no CUDA GPU"):
        cache_run(CacheConfig(run=str(tmp_path / "run"), coders=["topk:4@mlp_neurons.1"], device="cuda"))
    assert not (tmp_path / "run").exists()
