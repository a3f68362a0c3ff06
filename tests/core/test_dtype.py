"""One dtype rule: every model load resolves --dtype through autointerp.core.devices.resolve_dtype,
whose `auto` on a CPU is a measured verdict (bfloat16 only where it beats float32), cached per
machine; and every command honours the dtype it is given."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import torch

from autointerp.core import devices
from autointerp.core.errors import AutointerpError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_dir(tmp_path, monkeypatch):
    """An empty data folder, so the probe measures (and stores) anew."""
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    devices._cached_measure.cache_clear()
    yield tmp_path
    devices._cached_measure.cache_clear()


def test_auto_dtype_on_a_cpu_is_the_measured_verdict_stored_per_machine(probe_dir):
    width = 64
    choice = devices.probe_verdict(width)
    stored = json.loads(devices.probe_path().read_text())
    result = stored[devices.machine_key(width)]
    assert result["float32_tok_s"] > 0 and result["bfloat16_tok_s"] > 0
    assert result["cpu_class"] == devices.cpu_class() and result["width"] == width
    assert choice == ("bfloat16" if result["speedup"] >= devices.BF16_MIN_SPEEDUP else "float32")
    # the stored verdict is what later calls (other processes too) read: plant the opposite one
    for speedup, expected in ((2.5, "bfloat16"), (0.03, "float32"), (devices.BF16_MIN_SPEEDUP - 0.01, "float32")):
        stored[devices.machine_key(width)] = {**result, "speedup": speedup}
        devices.probe_path().write_text(json.dumps(stored))
        assert devices.probe_verdict(width) == expected
    # ISA limits are part of the machine's identity: a limited torch is measured on its own
    assert devices.machine_key(width) != devices.machine_key(width + 1)


def test_cpu_flags_settle_auto_where_they_can_and_the_probe_decides_the_rest(probe_dir, monkeypatch):
    amx = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    avx512_bf16 = {"avx2", "avx512f", "avx512_bf16"}
    cases = [(amx, {}, "bfloat16"), ({"avx2", "fma"}, {}, "float32"), ({"avx2", "avx512f"}, {}, "float32"),
             (avx512_bf16, {}, None), (set(), {}, None),
             # torch limited to AVX2 on an AMX machine: how an AVX2-only CPU is approximated
             (amx, {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "float32"),
             (amx, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None), (amx, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "bfloat16"),
             (amx, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "bfloat16")]
    for flags, env, expected in cases:
        assert devices.cpu_flag_verdict(frozenset(flags), env) == expected, (flags, env)
    # resolve_dtype follows the flags without measuring (this machine's own flags, whatever they are) ...
    for var in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(amx))  # another machine's flags: the one fake
    assert devices.resolve_dtype("auto", "cpu", 1536) == "bfloat16" and not devices.probe_path().exists()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert devices.resolve_dtype("auto", "cpu", 1536) == "float32" and not devices.probe_path().exists()
    # ... and measures where they cannot tell
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS")
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(avx512_bf16))
    assert devices.resolve_dtype("auto", "cpu", 64) == devices.probe_verdict(64) and devices.probe_path().exists()


def test_machine_key_follows_isa_limits(monkeypatch):
    before = devices.machine_key(576)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", os.environ.get("ONEDNN_MAX_CPU_ISA", "") + "-other")
    assert devices.machine_key(576) != before


def test_explicit_dtypes_pass_through_and_unknown_ones_are_refused(probe_dir):
    for name in devices.DTYPES:
        assert devices.resolve_dtype(name, "cpu") == name
    assert not devices.probe_path().exists()  # nothing measured for an explicit dtype
    with pytest.raises(AutointerpError, match="unknown dtype"):
        devices.resolve_dtype("int4", "cpu")


def test_a_slow_bfloat16_warm_up_is_its_own_measurement():
    """Where bfloat16 has no fast kernels one pass takes seconds; the probe must not loop on it."""
    result = devices.measure_bf16_speedup(64, budget_s=0.0)  # every warm-up overruns a zero budget
    assert result["speedup"] > 0 and result["float32_tok_s"] > 0


# Model loads that take a dtype. Only subject.load_causal_lm may call from_pretrained on a model
# class (it resolves the dtype first); _convert_gguf only dequantizes a GGUF once into a storage
# file and runs nothing.
MODEL_FROM_PRETRAINED = re.compile(r"(AutoModel\w*|\w+ForCausalLM)\.from_pretrained\(")
HARD_CODED_DTYPE = re.compile(r"\b(torch_)?dtype\s*=\s*torch\.(bfloat16|float16)\b")


def _python_files():
    for folder in ("autointerp", "tests", "tests_vllm", "bench", "pages"):
        yield from (ROOT / folder).rglob("*.py")
    yield ROOT / "app.py"


def test_no_model_load_bypasses_the_resolver():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(ROOT).as_posix()
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if MODEL_FROM_PRETRAINED.search(code) and rel != "autointerp/models/subject.py":
                offenders.append(f"{rel}:{i}: {line.strip()}")
            if HARD_CODED_DTYPE.search(code) and rel != "autointerp/models/subject.py":
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "model loads that do not go through autointerp.models.subject.load_causal_lm:\n" + "\n".join(
        offenders)
    # ... and the one place resolves: its model load is preceded by resolve_dtype, and the public
    # loaders default to auto
    import inspect

    from autointerp.models import subject

    src = inspect.getsource(subject.load_causal_lm)
    assert src.index("resolve_dtype(") < src.index("from_pretrained(source, dtype=")
    for fn in (subject.load_causal_lm, subject.load_subject):
        assert inspect.signature(fn).parameters["dtype"].default == "auto"
    from autointerp.llm.base import LLMConfig

    assert LLMConfig().dtype == "auto"


def test_the_tests_own_model_loads_pin_or_resolve_their_dtype():
    """Tests that load SmolLM2 or an LLM client name a dtype (float32 where they compare numbers)
    or leave it to the resolver's auto; none hard-codes bfloat16."""
    bf16 = [f"{p.relative_to(ROOT)}:{i}" for p in _python_files() if p.parts[-2] in ("tests", "tests_vllm", "e2e")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"load_subject\([^)]*bfloat16|LLMConfig\([^)]*dtype=\"bfloat16\"", line)]
    assert not bf16, bf16


def test_cache_and_train_sae_honour_dtype_and_record_it(tmp_path, tiny_model_dir, probe_dir):
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig, TrainConfig
    from autointerp.store import RunStore
    from autointerp.models.train import train_saes

    model = str(tiny_model_dir)
    for dtype in ("bfloat16", "float32"):
        out = tmp_path / f"saes-{dtype}"
        metrics = train_saes(TrainConfig(model=model, hookpoints=["resid_post.1"], out_dir=str(out), n_latents=64,
                                         k=4, tokens=1024, eval_tokens=256, epochs=1, batch_size=128, dtype=dtype))
        saved = json.loads((out / "resid_post.1" / "metrics.json").read_text())
        assert saved["subject_dtype"] == metrics["resid_post.1"]["subject_dtype"] == dtype
        assert saved["autocast"] is (dtype == "bfloat16")  # bfloat16 autocast only when asked for bfloat16
        run = cache_run(CacheConfig(run=str(tmp_path / f"run-{dtype}"), model=model, dtype=dtype, coder_dtype=dtype,
                                    coders=[f"sae:{out / 'resid_post.1'}", "topk:4@mlp_neurons.1"], tokens=64 * 8,
                                    part_contexts=4, batch_contexts=4))
        info = RunStore(run).info
        assert (info["dtype"], info["coder_dtype"]) == (dtype, dtype)
    # reopening a complete run in another dtype caches nothing and keeps its record; resuming an
    # unfinished one in another dtype names both, in order
    reopen = dict(model=model, coders=[f"sae:{tmp_path / 'saes-float32' / 'resid_post.1'}", "topk:4@mlp_neurons.1"],
                  tokens=64 * 8, part_contexts=4, batch_contexts=4, dtype="bfloat16", coder_dtype="bfloat16")
    run = tmp_path / "run-float32"
    cache_run(CacheConfig(run=str(run), **reopen))
    assert RunStore(run).info["dtype"] == "float32"
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "status": "caching"}))
    cache_run(CacheConfig(run=str(run), **reopen))
    assert RunStore(run).info["dtype"] == "float32 then bfloat16"
    auto = cache_run(CacheConfig(run=str(tmp_path / "run-auto"), model=model, coders=["topk:4@mlp_neurons.1"],
                                 tokens=64 * 4, part_contexts=4, batch_contexts=4))
    assert RunStore(auto).info["dtype"] == devices.resolve_dtype("auto", "cpu", 64)


def test_explain_score_and_steering_load_models_in_the_dtype_asked(tiny_model_dir, tiny_run):
    from autointerp.config import InterpretConfig
    from autointerp.runs.interpret import llm_client
    from autointerp.intervention.scorer import InterventionScorer
    from autointerp.store import RunStore

    for dtype in ("bfloat16", "float32"):
        cfg = InterpretConfig(run=str(tiny_run), hookpoint="resid_post.2", model=str(tiny_model_dir), dtype=dtype,
                              subject_dtype=dtype, device="cpu", n_intervention_prompts=2, prompt_tokens=8)
        client = llm_client(cfg)  # the client `explain` and `score` build
        assert client.model.dtype == getattr(torch, dtype)
        scorer = InterventionScorer.for_run(cfg, client, RunStore(tiny_run))
        assert scorer.subject.dtype == getattr(torch, dtype)


def test_the_intervention_scorer_steers_the_subject_on_the_device_asked(tiny_model_dir, tiny_run):
    """--device places the steered subject too (it stayed on the CPU before). Without a GPU here,
    cuda is checked by its one-line error: the device reached the subject's load."""
    from autointerp.config import InterpretConfig
    from autointerp.core.errors import AutointerpError
    from autointerp.runs.interpret import llm_client
    from autointerp.intervention.scorer import InterventionScorer
    from autointerp.store import RunStore

    cfg = InterpretConfig(run=str(tiny_run), hookpoint="resid_post.2", model=str(tiny_model_dir), dtype="float32",
                          device="cpu", n_intervention_prompts=2, prompt_tokens=8)
    client = llm_client(cfg)
    assert InterventionScorer.for_run(cfg, client, RunStore(tiny_run)).subject.device.type == "cpu"
    if torch.cuda.is_available():
        gpu = InterventionScorer.for_run(dataclasses.replace(cfg, device="cuda"), client, RunStore(tiny_run))
        assert gpu.subject.device.type == "cuda"
    else:
        with pytest.raises(AutointerpError, match="--device cuda: torch sees no CUDA GPU"):
            InterventionScorer.for_run(dataclasses.replace(cfg, device="cuda"), client, RunStore(tiny_run))
