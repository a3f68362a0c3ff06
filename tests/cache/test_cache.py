import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from autointerp.runs.cache import cache_run
from autointerp.models.coders import CoderSpec, build_coder
from autointerp.config import CacheConfig
from autointerp.core.errors import AutointerpError


def _rows(run: Path, name: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / name / 'acts.parquet'}')").df()


def test_cached_rows_equal_direct_encoding(tiny_run, tiny_subject, tiny_sae_dir):
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["status"] == "complete" and info["n_tokens"] == 40 * 64
    assert sorted(info["coders"]) == ["mlp_neurons.1-topk4", "resid_post.2"]
    tokens = duckdb.sql(f"SELECT * FROM read_parquet('{tiny_run / 'tokens.parquet'}') ORDER BY doc_id, pos").df()
    ids = torch.tensor(tokens.token_id.to_numpy().reshape(40, 65), dtype=torch.long)
    sae = build_coder(CoderSpec.parse(f"sae:{tiny_sae_dir}"), tiny_subject, dtype="float32")  # as tiny_run caches
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
                      batch_contexts=8, coder_dtype="float32")
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
