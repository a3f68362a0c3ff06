"""A run published early and grown in place: the first size is browsable, the rest is cached into
the same run, and the result equals a run cached in one go, row for row. A complete run asked for
more tokens grows without recomputing what it has; anything else about it must still match. A
kill mid-growth, at a named fault point, resumes to the same rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from autointerp.runs.cache import cache_run
from autointerp.config import CacheConfig
from autointerp.models.corpus import load_texts, tokenize_contexts
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import FAULT_ENV
from autointerp.core.milestones import read_milestones
from autointerp.store import CONTEXTS_KEY, RunStore, covered_contexts

SETS = ("resid_post.2", "mlp_neurons.1-topk4")


def _cfg(run: Path, subject, sae: Path, contexts: int, **kw) -> CacheConfig:
    kw = {"part_contexts": 4, "batch_contexts": 4, **kw}
    return CacheConfig(run=str(run), model=subject.name, coders=[f"sae:{sae}", "topk:4@mlp_neurons.1"],
                       tokens=64 * contexts, dtype="float32", coder_dtype="float32", **kw)


def _acts(run: Path, name: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / name / 'acts.parquet'}')").df()


def _latents(run: Path, name: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / name / 'latents.parquet'}')").df()


def _assert_same_run(a: Path, b: Path) -> None:
    """Same rows in the same (sorted) order, same latent tables, same tokens."""
    for name in SETS:
        x, y = _acts(a, name), _acts(b, name)
        assert len(x) > 0 and not y.duplicated(["latent", "doc_id", "pos"]).any()
        pd.testing.assert_frame_equal(x, y)
        pd.testing.assert_frame_equal(_latents(a, name), _latents(b, name))
    assert np.array_equal(np.load(a / "tokens.npy"), np.load(b / "tokens.npy"))
    info_a, info_b = (json.loads((r / "run.json").read_text()) for r in (a, b))
    assert (info_b["status"], info_b["n_contexts"], info_b["n_tokens"]) == (
        "complete", info_a["n_contexts"], info_a["n_tokens"])
    assert "plan" not in info_b and not (b / "progress").exists()
    assert not list(b.rglob("part-*.parquet")) and not list(b.rglob(".tmp-*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_subject, tiny_sae_dir) -> Path:
    """24 contexts cached in one go."""
    run = tmp_path_factory.mktemp("grow-ref") / "ref"
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24), subject=tiny_subject)
    return run


def test_contexts_of_a_smaller_request_are_a_prefix_of_a_larger_one(tiny_subject):
    texts = load_texts("wiki")
    small = tokenize_contexts(texts, tiny_subject.tokenizer, 64, 64 * 30, seed=3)
    large = tokenize_contexts(texts, tiny_subject.tokenizer, 64, 64 * 700, seed=3)
    assert len(small) == 30 and len(large) == 700
    assert np.array_equal(large[:30], small)
    other_seed = tokenize_contexts(texts, tiny_subject.tokenizer, 64, 64 * 30, seed=4)
    assert not np.array_equal(other_seed, small)  # the check below can tell runs apart


def test_a_run_published_early_is_browsable_then_grows_to_the_same_rows(tmp_path, tiny_subject, tiny_sae_dir,
                                                                        reference):
    run = tmp_path / "early"
    # publish once one part is cached (a budget of 0 s), and stop there
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24, publish_after_s=0, stop_when_browsable=True),
              subject=tiny_subject)
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["n_contexts"], info["n_tokens"]) == ("growing", 4, 4 * 64)
    assert info["plan"] == {"origin": 0, "target": 24, "part_contexts": 4}
    store = RunStore(run)
    assert store.hookpoints() == sorted(SETS) and store.n_contexts == 4 and len(store.tokens) == 24
    for name in SETS:
        assert covered_contexts(run / "acts" / name / "acts.parquet") == 4
        assert _acts(run, name).doc_id.max() < 4
    latent = int(store.latent_table("resid_post.2", sort="count", limit=1)[0].latent[0])
    assert all(e.doc_id < 4 for e in store.top_examples("resid_post.2", latent, 50))
    # silent windows come from the published contexts only, never from those still to cache
    assert all(e.doc_id < 4 for e in store.non_activating_examples("resid_post.2", latent, 10))
    count_before = store.latent_stats("resid_post.2", latent)["count"]
    assert [m["event"] for m in read_milestones(run)] == ["run browsable"]
    # the same call again: already browsable, nothing cached
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24, publish_after_s=0, stop_when_browsable=True),
              subject=tiny_subject)
    assert json.loads((run / "run.json").read_text())["n_contexts"] == 4

    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24), subject=tiny_subject)  # grows to the full size
    _assert_same_run(reference, run)
    # an open store picks the grown run up (what the app's cached store does on its next page run)
    store.refresh()
    assert store.info["status"] == "complete" and store.n_contexts == 24
    assert store.latent_stats("resid_post.2", latent)["count"] > count_before
    assert [(m["event"], m["n_tokens"], m["complete"]) for m in read_milestones(run)] == [
        ("run browsable", 4 * 64, False), ("run grown", 24 * 64, True)]


def test_a_complete_run_grows_in_place_caching_only_the_new_contexts(tmp_path, tiny_subject, tiny_sae_dir,
                                                                     reference):
    run = tmp_path / "small"
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 10, part_contexts=3), subject=tiny_subject)
    # another part size is fine for a complete run: its new contexts are cut from where it ends
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24, part_contexts=5), subject=tiny_subject)
    info = json.loads((run / "run.json").read_text())
    assert info["stream_stats"]["tokens"] == 14 * 64  # only the 14 new contexts were cached
    _assert_same_run(reference, run)
    for name in SETS:
        meta = duckdb.sql(f"SELECT value FROM parquet_kv_metadata('{run / 'acts' / name / 'acts.parquet'}') "
                          f"WHERE key = '{CONTEXTS_KEY}'").fetchall()
        assert meta == [(b"24",)]


def test_what_cannot_grow_is_a_one_line_error(tmp_path, tiny_subject, tiny_sae_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(load_texts("wiki")[:300]))
    run = tmp_path / "run"
    cfg = _cfg(run, tiny_subject, tiny_sae_dir, 8, corpus=str(corpus))
    cache_run(cfg, subject=tiny_subject)
    with pytest.raises(AutointerpError, match="a run only grows; ask for at least 512"):
        cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 4, corpus=str(corpus)), subject=tiny_subject)
    with pytest.raises(AutointerpError, match="already exists with different seed"):
        cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 16, corpus=str(corpus), seed=1), subject=tiny_subject)
    # the same file name with other text: its contexts are no longer a prefix of the request
    corpus.write_text("\n".join(load_texts("wiki")[300:600]))
    with pytest.raises(AutointerpError, match="no longer tokenizes into the contexts"):
        cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 16, corpus=str(corpus)), subject=tiny_subject)
    assert json.loads((run / "run.json").read_text())["status"] == "complete"  # refused: nothing changed
    # a run that is still growing keeps its plan until it completes
    growing = tmp_path / "growing"
    cache_run(_cfg(growing, tiny_subject, tiny_sae_dir, 16, publish_after_s=0, stop_when_browsable=True),
              subject=tiny_subject)
    with pytest.raises(AutointerpError, match="finish it with --tokens 1024 --part-contexts 4"):
        cache_run(_cfg(growing, tiny_subject, tiny_sae_dir, 20), subject=tiny_subject)


def test_a_publish_interrupted_between_sets_resumes(tmp_path, monkeypatch, tiny_subject, tiny_sae_dir, reference):
    """Killed after the first set is merged and before the second: the merged set is not merged
    twice, the other one is, and run.json says the old size until both are done."""
    import autointerp.store.publish as store_mod  # publish_latent_set calls it there

    run = tmp_path / "run"
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 8), subject=tiny_subject)
    real, calls = store_mod.write_latent_stats, []

    def interrupted(*a, **kw):
        calls.append(a[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(store_mod, "write_latent_stats", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24), subject=tiny_subject)
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["n_contexts"]) == ("growing", 8)
    first = calls[0].name
    assert covered_contexts(run / "acts" / first / "acts.parquet") == 24
    monkeypatch.setattr(store_mod, "write_latent_stats", real)
    cache_run(_cfg(run, tiny_subject, tiny_sae_dir, 24), subject=tiny_subject)
    _assert_same_run(reference, run)


def _cli(args: list[str], data: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update(PYTHONUNBUFFERED="1", AUTOINTERP_DATA=str(data))
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "autointerp.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
@pytest.mark.parametrize("fault, published", [("cache-part-written:3:KILL", 8), ("cache-published:1:KILL", 4)])
def test_growth_killed_at_a_named_point_resumes_to_the_same_rows(tmp_path, tiny_model_dir, tiny_sae_dir, reference,
                                                                 fault, published):
    """A real `autointerp cache` process: (1) a complete run of 8 contexts asked for 24, killed after
    its second new part; (2) a run published early, killed right after its first publish. The same
    command again completes it."""
    run = tmp_path / "run"
    args = ["cache", "--run", str(run), "--model", str(tiny_model_dir), "--coders", f"sae:{tiny_sae_dir}",
            "topk:4@mlp_neurons.1", "--part-contexts", "4", "--batch-contexts", "4", "--dtype", "float32",
            "--coder-dtype", "float32"]
    if fault.startswith("cache-part-written"):
        first = _cli(args + ["--tokens", str(64 * 8)], tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
    grow = args + ["--tokens", str(64 * 24)] + (["--publish-after-s", "0"] if "published" in fault else [])
    killed = _cli(grow, tmp_path, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["n_contexts"]) == ("growing", published)
    assert RunStore(run).hookpoints() == sorted(SETS)  # browsable while it waits
    resumed = _cli(grow, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(reference, run)
