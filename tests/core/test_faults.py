"""Crash safety at named points: a real `autointerp cache|explain|score` process signals itself
(AUTOINTERP_FAULT=POINT:N:SIGNAL, see autointerp/core/faults.py) at an exact place, the same command
is run again, and the result must equal an uninterrupted run: nothing lost, nothing duplicated, no
temporary file left. No test here waits on the clock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from autointerp.core.errors import AutointerpError
from autointerp.core.faults import FAULT_ENV, fault_point
from autointerp.store import RunStore, append_results

SET = "resid_post.2"
N_LATENTS = 6
pytestmark = pytest.mark.slow


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if fault:
        env[FAULT_ENV] = fault
    # A shell that started this test run in the background (`cmd &`) leaves SIGINT ignored, and an
    # ignored signal stays ignored across exec: restore the default so Python installs its
    # KeyboardInterrupt handler, as it does under a terminal.
    return subprocess.run([sys.executable, "-m", "autointerp.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _killed_then_resumed(args: list[str], fault: str) -> subprocess.CompletedProcess:
    """Run with the fault, check it died of it, run again without; returns the killed run."""
    killed = _cli(*args, fault=fault)
    if fault.endswith(":KILL"):
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    else:  # Ctrl-C: the CLI's clean exit, with advice to resume
        assert killed.returncode == 130 and "run the same command again to resume" in killed.stderr, killed.stderr
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return killed


def _no_temp_files(root: Path) -> None:
    left = [p for p in root.rglob(".tmp-*")]
    assert not left, left


# --- cache -----------------------------------------------------------------------------------------

def _cache_args(run: Path, model: Path, sae: Path) -> list[str]:
    return ["cache", "--run", str(run), "--model", str(model), "--coders", f"sae:{sae}", "topk:4@mlp_neurons.1",
            "--tokens", str(64 * 160), "--part-contexts", "8", "--batch-contexts", "4"]


def _acts(run: Path, name: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / name / 'acts.parquet'}') "
                      f"ORDER BY latent, doc_id, pos").df()


@pytest.fixture(scope="module")
def cache_reference(tmp_path_factory, tiny_model_dir, tiny_sae_dir) -> Path:
    ref = tmp_path_factory.mktemp("fault-cache") / "ref"
    out = _cli(*_cache_args(ref, tiny_model_dir, tiny_sae_dir))
    assert out.returncode == 0, out.stderr
    return ref


# tokens.parquet, token_strings.parquet and run.json are atomic writes 1-3; part 0 is 4-6 (two sets
# and its .done marker), so write 8 is the second set's file of part 1.
CACHE_FAULTS = ["cache-part-written:4:KILL", "cache-part-written:4:INT", "mid-write:8:KILL"]


@pytest.mark.parametrize("fault", CACHE_FAULTS)
def test_cache_killed_at_a_named_point_resumes_to_the_same_rows(tmp_path, tiny_model_dir, tiny_sae_dir,
                                                                 cache_reference, fault):
    run = tmp_path / "killed"
    args = _cache_args(run, tiny_model_dir, tiny_sae_dir)
    killed = _cli(*args, fault=fault)
    assert killed.returncode in (-signal.SIGKILL, 130), killed.stderr[-2000:]
    done = sorted(p.name for p in (run / "progress").glob("*.done"))
    expected = 4 if fault.startswith("cache-part-written") else 1  # mid-write:8 is inside part 1
    assert len(done) == expected, done
    assert json.loads((run / "run.json").read_text())["status"] == "caching"
    if fault.startswith("mid-write"):
        assert list((run / "acts").rglob(".tmp-*")), "the kill should leave the half-written file behind"
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("resid_post.2", "mlp_neurons.1-topk4"):
        a, b = _acts(cache_reference, name), _acts(run, name)
        assert len(b) == len(a) > 0
        assert not b.duplicated(["latent", "doc_id", "pos"]).any()
        pd.testing.assert_frame_equal(a, b)
    _no_temp_files(run)


# --- explain and score -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def latents(store) -> list[int]:
    page, _ = store.latent_table(SET, sort="frequency", limit=N_LATENTS)
    return [int(x) for x in page.latent]


def _run_copy(tiny_run: Path, dest: Path, explanations: list[int] | None = None) -> Path:
    shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns("results"))
    if explanations:  # as a human would write them through the app; scoring needs explanations
        append_results(dest, "explanations", [{"hookpoint": SET, "latent": x, "explanation": f"words like number {i}",
                                                "model": "human"} for i, x in enumerate(explanations)])
    return dest


def _explain_args(run: Path, model: Path, latents: list[int]) -> list[str]:
    # The tiny random Llama answers garbage quickly: failures and explanations alike are records.
    return ["explain", "--run", str(run), "--hookpoint", SET, "--latents", *map(str, latents), "--model", str(model),
            "--n-explain", "6", "--chunk", "1"]


def _score_args(run: Path, model: Path, latents: list[int]) -> list[str]:
    # float32: the tiny random model's P(Yes) values sit within bf16 rounding of each other, and in
    # bf16 one latent's AUROC was seen to differ by one pair between two uninterrupted processes
    # (0.583 vs 0.611, 2 of ~11 processes): a numeric effect, not a resume one
    return ["score", "--run", str(run), "--hookpoint", SET, "--latents", *map(str, latents), "--model", str(model),
            "--scorers", "detection", "--test-per-quantile", "1", "--n-negative", "6", "--chunk", "1",
            "--dtype", "float32"]


def _explanation_rows(run: Path) -> pd.DataFrame:
    files = str(run / "results" / "explanations" / "part-*.parquet")
    return duckdb.sql(f"SELECT latent, explanation, raw, error FROM read_parquet('{files}') "
                      f"WHERE model != 'human' ORDER BY latent").df()


def _visible_scores(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every score row stored (duplicates would show here) and the decisions readers reach."""
    store = RunStore(run)
    files = str(run / "results" / "scores" / "part-*.parquet")
    scores = duckdb.sql(f"SELECT * FROM read_parquet('{files}') ORDER BY latent, scorer").df()
    decisions = pd.concat([store.decisions(sid) for sid in scores.score_id], ignore_index=True)
    return scores, decisions


@pytest.fixture(scope="module")
def explain_reference(tmp_path_factory, tiny_run, tiny_model_dir, latents) -> pd.DataFrame:
    run = _run_copy(tiny_run, tmp_path_factory.mktemp("fault-explain") / "ref")
    out = _cli(*_explain_args(run, tiny_model_dir, latents))
    assert out.returncode == 0, out.stderr[-3000:]
    return _explanation_rows(run)


@pytest.mark.parametrize("fault", ["explain-chunk-written:3:KILL", "explain-chunk-written:3:INT",
                                   "mid-write:2:KILL"])
def test_explain_killed_at_a_named_point_resumes_to_the_same_records(tmp_path, tiny_run, tiny_model_dir, latents,
                                                                     explain_reference, fault):
    run = _run_copy(tiny_run, tmp_path / "run")
    args = _explain_args(run, tiny_model_dir, latents)
    _killed_then_resumed(args, fault)
    got = _explanation_rows(run)
    assert len(explain_reference) == N_LATENTS
    assert sorted(got.latent) == sorted(latents)  # 0 lost, 0 duplicated
    pd.testing.assert_frame_equal(got.reset_index(drop=True), explain_reference.reset_index(drop=True))
    _no_temp_files(run)


@pytest.fixture(scope="module")
def score_reference(tmp_path_factory, tiny_run, tiny_model_dir, latents) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = _run_copy(tiny_run, tmp_path_factory.mktemp("fault-score") / "ref", explanations=latents)
    out = _cli(*_score_args(run, tiny_model_dir, latents))
    assert out.returncode == 0, out.stderr[-3000:]
    return _visible_scores(run)


SCORE_COLUMNS = ["latent", "scorer", "explanation", "n", "n_failed", "auroc", "balanced_accuracy", "error"]
DECISION_COLUMNS = ["latent", "doc_id", "start", "activating", "probability"]


@pytest.mark.parametrize("fault", ["score-between-writes:3:KILL", "score-between-writes:3:INT",
                                   "score-chunk-written:3:KILL", "mid-write:4:KILL"])
def test_score_killed_at_a_named_point_resumes_to_the_same_scores(tmp_path, tiny_run, tiny_model_dir, latents,
                                                                  score_reference, fault):
    run = _run_copy(tiny_run, tmp_path / "run", explanations=latents)
    args = _score_args(run, tiny_model_dir, latents)
    _killed_then_resumed(args, fault)
    ref_scores, ref_decisions = score_reference
    scores, decisions = _visible_scores(run)
    assert sorted(scores.latent) == sorted(latents)  # one score row per latent: 0 lost, 0 duplicated
    pd.testing.assert_frame_equal(scores[SCORE_COLUMNS].reset_index(drop=True),
                                  ref_scores[SCORE_COLUMNS].reset_index(drop=True))
    key = ["latent", "doc_id", "start"]
    assert not decisions.duplicated(key).any()
    a = ref_decisions[DECISION_COLUMNS].sort_values(key).reset_index(drop=True)
    b = decisions[DECISION_COLUMNS].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    assert np.isfinite(b.probability).all()
    _no_temp_files(run)


def test_malformed_fault_spec_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "somewhere:1:KILL")
    with pytest.raises(AutointerpError, match="is malformed: use POINT:N:KILL|INT") as e:
        fault_point("mid-write")
    assert "\n" not in str(e.value)
    monkeypatch.setenv(FAULT_ENV, "mid-write:2:KILL")
    fault_point("mid-write")  # the first pass of the point: no signal yet
