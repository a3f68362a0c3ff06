import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from autointerp.cache import cache_run
from autointerp.coders import CoderSpec, build_coder
from autointerp.config import CacheConfig
from autointerp.errors import AutointerpError


def _rows(run: Path, name: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / name / 'acts.parquet'}')").df()


def test_cached_rows_equal_direct_encoding(tiny_run, tiny_subject, tiny_sae_dir):
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["status"] == "complete" and info["n_tokens"] == 40 * 64
    assert sorted(info["coders"]) == ["mlp_neurons.1-topk4", "resid_post.2"]
    tokens = duckdb.sql(f"SELECT * FROM read_parquet('{tiny_run / 'tokens.parquet'}') ORDER BY doc_id, pos").df()
    ids = torch.tensor(tokens.token_id.to_numpy().reshape(40, 65), dtype=torch.long)
    sae = build_coder(CoderSpec.parse(f"sae:{tiny_sae_dir}"), tiny_subject, dtype=CacheConfig().coder_dtype)
    x = tiny_subject.activations(ids[5:8], ["resid_post.2"])["resid_post.2"][:, 1:].reshape(-1, 64)
    dense = sae.encode(x).to_dense(sae.n_latents).reshape(3, 64, -1)
    rows = _rows(tiny_run, "resid_post.2")
    got = np.zeros((3, 64, sae.n_latents), dtype=np.float32)
    sub = rows[(rows.doc_id >= 5) & (rows.doc_id < 8)]
    got[sub.doc_id - 5, sub.pos - 1, sub.latent] = sub.value
    np.testing.assert_array_equal(got, dense.numpy())
    assert rows.pos.min() == 1  # the BOS position is never cached
    # sorted by latent, then value descending
    assert rows.latent.is_monotonic_increasing
    assert all(g.value.is_monotonic_decreasing for _, g in rows.groupby("latent"))
    assert not (tiny_run / "acts" / "resid_post.2" / "parts").exists()


def test_latents_table_agrees_with_rows(tiny_run):
    rows = _rows(tiny_run, "mlp_neurons.1-topk4")
    lat = duckdb.sql(f"SELECT * FROM read_parquet('{tiny_run / 'acts' / 'mlp_neurons.1-topk4' / 'latents.parquet'}')").df()
    assert len(lat) == 96  # every neuron, active or not
    agg = rows.groupby("latent").value.agg(["count", "max", "mean"])
    lat = lat.set_index("latent")
    np.testing.assert_array_equal(lat.loc[agg.index, "count"], agg["count"])
    np.testing.assert_allclose(lat.loc[agg.index, "max_act"], agg["max"], rtol=1e-6)
    np.testing.assert_allclose(lat.loc[agg.index, "frequency"], agg["count"] / (40 * 64))
    assert all(sum(h) == c for h, c in zip(lat.histogram, lat["count"]))
    assert (lat.drop(agg.index)["count"] == 0).all()


def test_second_call_is_idempotent(tiny_run, tiny_subject, tiny_sae_dir):
    before = (tiny_run / "acts" / "resid_post.2" / "acts.parquet").stat().st_mtime_ns
    cfg = CacheConfig(run=str(tiny_run), model=tiny_subject.name,
                      coders=[f"sae:{tiny_sae_dir}", "topk:4@mlp_neurons.1"], tokens=64 * 40, part_contexts=16,
                      batch_contexts=8)
    cache_run(cfg, subject=tiny_subject)
    assert (tiny_run / "acts" / "resid_post.2" / "acts.parquet").stat().st_mtime_ns == before


def test_changed_settings_on_existing_run_are_refused(tiny_run, tiny_subject, tiny_sae_dir):
    cfg = CacheConfig(run=str(tiny_run), model=tiny_subject.name, coders=[f"sae:{tiny_sae_dir}"],
                      tokens=64 * 40, part_contexts=16)
    with pytest.raises(AutointerpError, match="already exists with different coders"):
        cache_run(cfg, subject=tiny_subject)


def test_empty_corpus_is_a_one_line_error(tmp_path, tiny_subject):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n  \n")
    cfg = CacheConfig(run=str(tmp_path / "r"), corpus=str(corpus), coders=["topk:4@mlp_neurons.1"], tokens=100)
    with pytest.raises(AutointerpError, match="contains no text") as e:
        cache_run(cfg, subject=tiny_subject)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()


def _cache_cmd(run: Path, model: Path, sae: Path) -> list[str]:
    return [sys.executable, "-m", "autointerp.cli", "cache", "--run", str(run), "--model", str(model),
            "--coders", f"sae:{sae}", "topk:4@mlp_neurons.1", "--tokens", str(64 * 160),
            "--part-contexts", "8", "--batch-contexts", "4"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_without_duplicates_or_gaps(tmp_path, tiny_model_dir, tiny_sae_dir, tiny_run, sig):
    """Kill a real `autointerp cache` process midway (kill -9 or Ctrl-C), start it again, and compare
    with an uninterrupted run of the same settings."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cache_cmd(ref, tiny_model_dir, tiny_sae_dir), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cache_cmd(run, tiny_model_dir, tiny_sae_dir), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run / "progress").glob("*.done"))) < 4:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    n_done = len(list((run / "progress").glob("*.done")))
    assert 4 <= n_done < 20, f"kill landed outside the caching phase ({n_done} parts done)"
    assert json.loads((run / "run.json").read_text())["status"] == "caching"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"resume" in err
    resumed = subprocess.run(_cache_cmd(run, tiny_model_dir, tiny_sae_dir), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("resid_post.2", "mlp_neurons.1-topk4"):
        a = _rows(ref, name).sort_values(["latent", "doc_id", "pos"]).reset_index(drop=True)
        b = _rows(run, name).sort_values(["latent", "doc_id", "pos"]).reset_index(drop=True)
        assert len(b) == len(a) > 0
        assert not b.duplicated(["latent", "doc_id", "pos"]).any()
        pd.testing.assert_frame_equal(a, b)
    assert not list(run.rglob(".tmp-*"))
