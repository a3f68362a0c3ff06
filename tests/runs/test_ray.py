"""`--ray` on a real local Ray cluster: a head and two worker nodes on 127.0.0.1 (one CPU each),
plus a third worker node started with a fault spec, whose workers kill -9 themselves at a named
point. Distributed results must equal single-process ones row for row."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autointerp.config import CacheConfig, InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.store import RunStore, append_results

SET = "resid_post.2"
RAY = str(Path(sys.executable).parent / "ray")
FAULTS = "cache-part-written:1:KILL,worker-chunk-done:1:KILL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str, env: dict | None = None) -> None:
    subprocess.run([RAY, "start", "--node-ip-address=127.0.0.1", "--object-store-memory=80000000",
                    "--disable-usage-stats", *args], check=True, capture_output=True, text=True,
                   env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}, timeout=180)


@pytest.fixture(scope="module")
def ray_cluster():
    """HOST:PORT of a head with no CPUs (it runs nothing) and two one-CPU worker nodes."""
    import ray

    port = _free_port()
    _ray_start("--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false")
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(2):
            _ray_start(f"--address={address}", "--num-cpus=1", "--num-gpus=0")
        yield address
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _worker_died(caplog) -> bool:
    """Whether the driver logged a dead worker whose unit it queued again."""
    return any("a Ray worker died" in r.getMessage() for r in caplog.records)


def _add_faulty_node(address: str) -> None:
    """A third worker node whose workers die (SIGKILL) at the first part or chunk they finish."""
    _ray_start(f"--address={address}", "--num-cpus=1", "--num-gpus=0", env={"AUTOINTERP_FAULT": FAULTS})


def _acts(run: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(run / "acts" / name / "acts.parquet")
    return df.sort_values(["latent", "doc_id", "pos"]).reset_index(drop=True)


def _assert_same_cache(a: Path, b: Path) -> None:
    ma, mb = (json.loads((r / "run.json").read_text()) for r in (a, b))
    for key in ("n_tokens", "n_contexts", "coders", "status"):
        assert ma[key] == mb[key], key
    assert np.array_equal(np.load(a / "tokens.npy"), np.load(b / "tokens.npy"))
    for name in ma["coders"]:
        x, y = _acts(a, name), _acts(b, name)
        assert len(x) == len(y) and len(x) > 0
        assert (x[["latent", "doc_id", "pos"]].to_numpy() == y[["latent", "doc_id", "pos"]].to_numpy()).all()
        np.testing.assert_allclose(x.value, y.value, rtol=1e-4, atol=1e-5)
        la, lb = (pd.read_parquet(r / "acts" / name / "latents.parquet").sort_values("latent") for r in (a, b))
        assert la.latent.tolist() == lb.latent.tolist()
        assert la["count"].tolist() == lb["count"].tolist()
    assert not list(b.rglob("*.tmp*")) and not (b / "progress").exists()


def _tiny_cache_cfg(run: Path, tiny_subject, tiny_sae_dir, **kw) -> CacheConfig:
    # the tiny_run fixture's settings (tests/conftest.py): 40 contexts in 3 parts, the subject in
    # float32 (as tiny_subject is loaded), the coders in float32 too
    return CacheConfig(run=str(run), model=tiny_subject.name, coders=[f"sae:{tiny_sae_dir}", "topk:4@mlp_neurons.1"],
                       tokens=64 * 40, part_contexts=16, batch_contexts=8, device="cpu", dtype="float32",
                       coder_dtype="float32", **kw)


def test_ray_flag_errors_are_one_line(tiny_run, tmp_path, monkeypatch):
    from autointerp.runs.cache import cache_run
    from autointerp.runs.executor import connect

    closed = _free_port()  # bound then released: nothing listens there
    with pytest.raises(AutointerpError, match=f"cannot reach a Ray cluster at 127.0.0.1:{closed}"):
        connect(f"127.0.0.1:{closed}")
    with pytest.raises(AutointerpError, match="is not an address"):
        cache_run(CacheConfig(run=str(tmp_path / "r"), coders=["neurons@mlp_neurons.1"], ray="headnode"))
    # Ray is installed here, so its absence is simulated (the only fake in this file)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AutointerpError, match=r"optional extra: pip install -e '\.\[ray\]'"):
        connect("auto")


def test_distributed_cache_equals_single_process_even_when_a_worker_is_killed(
        ray_cluster, tiny_run, tiny_subject, tiny_sae_dir, tmp_path, caplog):
    from autointerp.runs.cache import cache_run

    run = tmp_path / "runs" / "tiny-ray"
    cfg = _tiny_cache_cfg(run, tiny_subject, tiny_sae_dir, ray=ray_cluster)
    cache_run(cfg)
    _assert_same_cache(tiny_run, run)
    # a third node whose worker is killed (-9) right after its first part: that part is redone
    # elsewhere, and the run still equals the single-process one
    _add_faulty_node(ray_cluster)
    run2 = tmp_path / "runs" / "tiny-ray-killed"
    with caplog.at_level("WARNING", logger="autointerp.runs.executor"):
        cache_run(dataclasses.replace(cfg, run=str(run2)))
    assert _worker_died(caplog), "the faulty worker was not killed"
    _assert_same_cache(tiny_run, run2)
    before = sorted(p.stat().st_mtime_ns for p in run2.rglob("*.parquet"))
    cache_run(dataclasses.replace(cfg, run=str(run2)))  # a rerun finds it complete and writes nothing
    assert sorted(p.stat().st_mtime_ns for p in run2.rglob("*.parquet")) == before


def _scores(run: Path) -> pd.DataFrame:
    df = RunStore(run).scores(SET)
    return df.sort_values(["latent", "scorer"]).reset_index(drop=True)


def _decisions(run: Path) -> pd.DataFrame:
    store = RunStore(run)
    scores = store.scores(SET)
    frames = [store.decisions(sid).assign(latent=lat, scorer=sc)
              for sid, lat, sc in zip(scores.score_id, scores.latent, scores.scorer)]
    return pd.concat(frames).sort_values(["latent", "scorer", "doc_id", "start"]).reset_index(drop=True)


def test_distributed_explain_and_score_equal_single_process(ray_cluster, tiny_run, tiny_model_dir, fresh_copy,
                                                             caplog):
    """Runs after the cache test: the faulty node is in the cluster, so one of three workers is
    killed after its first chunk, and its chunk is redone by another."""
    from autointerp.runs.interpret import run_explain, run_score, select_latents

    single, spread = fresh_copy(tiny_run, "single"), fresh_copy(tiny_run, "spread")
    base = InterpretConfig(run=str(single), hookpoint=SET, model=str(tiny_model_dir), dtype="float32", device="cpu",
                           top_frequent=6, n_explain=6, test_per_quantile=1, n_negative=6, chunk=2, batch_size=4,
                           scorers=["detection", "fuzzing", "embedding"])
    latents = select_latents(RunStore(single), base)
    assert len(latents) == 6
    for run in (single, spread):
        cfg = dataclasses.replace(base, run=str(run), ray=ray_cluster if run == spread else "")
        caplog.clear()
        with caplog.at_level("WARNING", logger="autointerp.runs.executor"):
            rows = run_explain(cfg)
        assert len(rows) == 6
        assert _worker_died(caplog) == (run == spread)  # the faulty node's explain worker was killed
        # the tiny random model's explanations fail to parse; give every latent a human one to score
        append_results(run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": f"numbers {x}",
                                              "model": "human"} for x in latents])
        caplog.clear()
        with caplog.at_level("WARNING", logger="autointerp.runs.executor"):
            assert len(run_score(cfg)) == 18
        assert _worker_died(caplog) == (run == spread)  # the faulty node's worker was killed, its chunk redone
        assert run_score(cfg) == []  # a rerun has nothing left to do
    ea, eb = (RunStore(r).explanations(SET).sort_values("latent") for r in (single, spread))
    sa, sb = _scores(single), _scores(spread)
    assert len(sa) == len(sb) == 18  # nothing lost, nothing duplicated by the killed worker
    assert sa[["latent", "scorer", "explanation", "n", "n_failed"]].equals(sb[["latent", "scorer", "explanation", "n",
                                                                            "n_failed"]])
    np.testing.assert_allclose(sa.auroc.astype(float), sb.auroc.astype(float), atol=1e-4)
    da, db = _decisions(single), _decisions(spread)
    assert da[["latent", "scorer", "doc_id", "start", "activating"]].equals(
        db[["latent", "scorer", "doc_id", "start", "activating"]])
    np.testing.assert_allclose(da.probability.astype(float), db.probability.astype(float), atol=1e-4)
    # the explain run: every latent once, the same raw answers
    human = RunStore(single).explanations(SET)
    assert len(human) == 6
    raw_a = pd.read_parquet(single / "results" / "explanations").query("model != 'human'").sort_values("latent")
    raw_b = pd.read_parquet(spread / "results" / "explanations").query("model != 'human'").sort_values("latent")
    assert raw_a.latent.tolist() == raw_b.latent.tolist() == sorted(latents)
    assert raw_a.raw.tolist() == raw_b.raw.tolist()
    assert ea.latent.tolist() == eb.latent.tolist()


def test_distributed_study_equals_single_process(ray_cluster, tiny_run, tiny_model_dir, fresh_copy, caplog):
    """`analyze sampling --ray`: each chunk's explanations (one per strategy) and scores are made on
    a worker (one of them killed after its first chunk) and written by the driver."""
    from autointerp.config import AnalyzeConfig
    from autointerp.runs.studies import run_study

    results = {}
    for name in ("single", "spread"):
        run = fresh_copy(tiny_run, f"study-{name}")
        cfg = AnalyzeConfig(run=str(run), hookpoint=SET, model=str(tiny_model_dir), dtype="float32", device="cpu",
                            top_frequent=3, random=0, n_explain=6, test_per_quantile=1, n_negative=6, chunk=1,
                            batch_size=4, strategies=["top", "random"], scorers=["detection"],
                            ray=ray_cluster if name == "spread" else "")
        caplog.clear()
        with caplog.at_level("WARNING", logger="autointerp.runs.executor"):
            try:
                run_study("sampling", cfg)
            except AutointerpError as e:  # the tiny random model's explanations do not parse: nothing to compare
                assert "explanation" in str(e) or "enough" in str(e)
        assert _worker_died(caplog) == (name == "spread")
        results[name] = RunStore(run).study_results("study_explanations")
    a, b = (results[k].sort_values(["latent", "condition"]).reset_index(drop=True) for k in ("single", "spread"))
    assert len(a) == len(b) == 6  # 3 latents x 2 strategies, none lost or duplicated
    assert a[["latent", "condition", "raw", "shown"]].equals(b[["latent", "condition", "raw", "shown"]])


def test_distributed_validate_equals_single_process(ray_cluster, tiny_run, tiny_model_dir, fresh_copy, caplog):
    """`validate --ray`: each chunk's true, random and neutral explanations are scored on a worker
    (the faulty node's worker is killed after its first chunk and its chunk redone); the driver
    writes one validation, equal to a single-process one."""
    from autointerp.runs.interpret import select_latents
    from autointerp.runs.validity import run_validate

    got = {}
    for name in ("single", "spread"):
        run = fresh_copy(tiny_run, f"validate-{name}")
        cfg = InterpretConfig(run=str(run), hookpoint=SET, model=str(tiny_model_dir), dtype="float32", device="cpu",
                              top_frequent=6, test_per_quantile=1, n_negative=6, chunk=2, batch_size=4,
                              scorers=["detection", "embedding"], ray=ray_cluster if name == "spread" else "")
        latents = select_latents(RunStore(run), cfg)
        append_results(run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": f"numbers {x}",
                                              "model": "human"} for x in latents])
        caplog.clear()
        with caplog.at_level("WARNING", logger="autointerp.runs.executor"):
            summary = run_validate(cfg)
        assert _worker_died(caplog) == (name == "spread")
        rows = pd.read_parquet(run / "results" / "validity")
        got[name] = (summary, rows.sort_values(["latent", "scorer", "which"]).reset_index(drop=True))
    (sa, ra), (sb, rb) = got["single"], got["spread"]
    assert len(ra) == len(rb) == 6 * 2 * 3  # latents x scorers x (true, random, neutral): none lost or doubled
    assert ra[["latent", "scorer", "which", "explanation", "n"]].equals(rb[["latent", "scorer", "which", "explanation",
                                                                          "n"]])
    np.testing.assert_allclose(ra.value.astype(float), rb.value.astype(float), atol=1e-4)
    assert sa.scorer.tolist() == sb.scorer.tolist()
    np.testing.assert_allclose(sa["diff"].astype(float), sb["diff"].astype(float), atol=1e-4)
