from pathlib import Path

import duckdb
import numpy as np
import pytest

from autointerp.core.errors import AutointerpError
from autointerp.store import RunStore, list_runs

SET = "resid_post.2"


@pytest.fixture(scope="module")
def rows(tiny_run):
    return duckdb.sql(f"SELECT * FROM read_parquet('{tiny_run / 'acts' / SET / 'acts.parquet'}')").df()


def _busy_latent(rows) -> int:
    return int(rows.latent.value_counts().index[0])


def test_run_level_queries(store, tiny_run):
    assert store.hookpoints() == ["mlp_neurons.1-topk4", "resid_post.2"]
    assert store.tokens.shape == (40, 65)
    assert store.n_windows() == 80
    assert [r["name"] for r in list_runs(tiny_run.parent)] == ["tiny"]


def test_a_copied_run_is_known_by_its_folder(tiny_run, tmp_path):
    """A run folder copied under another name keeps the old name in run.json; the catalogue names it
    by its folder (what --run takes), so the app's links and jobs reach the copy, not the original."""
    import shutil

    shutil.copytree(tiny_run, tmp_path / "tiny-copy", ignore=shutil.ignore_patterns("results", "search"))
    shutil.copytree(tiny_run, tmp_path / "tiny", ignore=shutil.ignore_patterns("results", "search"))
    runs = {r["name"]: r for r in list_runs(tmp_path)}
    assert set(runs) == {"tiny", "tiny-copy"}
    assert runs["tiny-copy"]["path"] == str(tmp_path / "tiny-copy") and runs["tiny-copy"]["manifest_name"] == "tiny"
    assert "manifest_name" not in runs["tiny"]


def test_latent_table_sorts_filters_and_pages(store, rows):
    page, total = store.latent_table(SET, sort="frequency", limit=10)
    assert total == 256 and len(page) == 10
    counts = rows.latent.value_counts()
    assert page.latent.iloc[0] == counts.index[0] and page["count"].iloc[0] == counts.iloc[0]
    assert page.frequency.is_monotonic_decreasing
    page2, _ = store.latent_table(SET, sort="frequency", limit=10, offset=10)
    assert not set(page.latent) & set(page2.latent)
    thr = float(counts.iloc[20]) / (40 * 64)
    filt, n = store.latent_table(SET, min_frequency=thr, sort="max_act", descending=False, limit=1000)
    assert n == int((counts >= counts.iloc[20]).sum()) and (filt.frequency >= thr).all()
    assert filt.max_act.is_monotonic_increasing
    chosen, n = store.latent_table(SET, latents=[3, 5, 7])
    assert n == 3 and sorted(chosen.latent) == [3, 5, 7]
    with pytest.raises(AutointerpError, match="cannot sort"):
        store.latent_table(SET, sort="latent; DROP TABLE x")


def test_top_examples_are_the_strongest_windows_with_true_activations(store, rows):
    latent = _busy_latent(rows)
    mine = rows[rows.latent == latent]
    ex = store.top_examples(SET, latent, n=5)
    assert len(ex) == 5
    win_max = mine.assign(w=(mine.pos - 1) // 32).groupby(["doc_id", "w"]).value.max().sort_values(ascending=False)
    np.testing.assert_allclose([e.max_act for e in ex], win_max.iloc[:5].to_numpy(), rtol=1e-6)
    e = ex[0]
    assert len(e.tokens) == len(e.acts) == len(e.token_ids) == 32
    assert e.token_ids == store.tokens[e.doc_id, e.start:e.start + 32].tolist()
    truth = mine[(mine.doc_id == e.doc_id) & (mine.pos >= e.start) & (mine.pos < e.start + 32)]
    dense = np.zeros(32)
    dense[truth.pos - e.start] = truth.value
    np.testing.assert_allclose(e.acts, dense, rtol=1e-6)
    assert "".join(e.tokens).strip()  # real decoded text


def test_quantile_random_and_non_activating_examples(store, rows):
    latent = _busy_latent(rows)
    q = store.quantile_examples(SET, latent, n_quantiles=4, per_quantile=2, seed=1)
    assert {e.quantile for e in q} == {1, 2, 3, 4}
    by_q = {k: [e.max_act for e in q if e.quantile == k] for k in range(1, 5)}
    assert max(by_q[1]) <= min(by_q[4])
    assert [(e.doc_id, e.start) for e in q] == \
        [(e.doc_id, e.start) for e in store.quantile_examples(SET, latent, 4, 2, seed=1)]  # seeded
    r1 = store.random_examples(SET, latent, n=6, seed=3)
    assert len(r1) == 6 and all(e.max_act > 0 for e in r1)
    assert [(e.doc_id, e.start) for e in r1] == [(e.doc_id, e.start) for e in store.random_examples(SET, latent, 6, 3)]
    assert [(e.doc_id, e.start) for e in r1] != [(e.doc_id, e.start) for e in store.random_examples(SET, latent, 6, 4)]
    neg = store.non_activating_examples(SET, latent, n=10, seed=0)
    active = set(zip(rows[rows.latent == latent].doc_id, (rows[rows.latent == latent].pos - 1) // 32))
    assert len(neg) == min(10, 80 - len(active))
    assert all((e.doc_id, (e.start - 1) // 32) not in active for e in neg)
    assert len({(e.doc_id, e.start) for e in neg}) == len(neg)
    # the Latent page's one scan gives exactly what the two separate queries give
    top, quantiles = store.top_and_quantile_examples(SET, latent, n_top=5, n_quantiles=4, per_quantile=2, seed=1)
    assert [(e.doc_id, e.start, e.acts) for e in top] == [(e.doc_id, e.start, e.acts) for e in store.top_examples(SET, latent, 5)]
    assert [(e.doc_id, e.start, e.acts, e.quantile) for e in quantiles] == [(e.doc_id, e.start, e.acts, e.quantile) for e in q]


def test_histogram_counts_all_activations(store, rows):
    latent = _busy_latent(rows)
    edges, counts = store.histogram(SET, latent)
    assert counts.sum() == (rows.latent == latent).sum() and len(edges) == len(counts) + 1
    assert edges[-1] == pytest.approx(rows[rows.latent == latent].value.max())


def test_bad_requests_and_corrupt_files_are_one_line_errors(store, tiny_run, tmp_path):
    with pytest.raises(AutointerpError, match="no latent set 'mlp_out.9'"):
        store.top_examples("mlp_out.9", 0)
    with pytest.raises(AutointerpError, match="does not exist"):
        store.latent_stats(SET, 10_000)
    with pytest.raises(AutointerpError, match="no run at"):
        RunStore(tmp_path / "missing")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "acts" / SET / "acts.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(AutointerpError, match="unreadable") as e:
        RunStore(broken).top_examples(SET, 0)
    assert "\n" not in str(e.value)


def test_one_corrupt_result_part_is_skipped_with_a_warning_and_the_run_still_opens(tiny_run, tmp_path, caplog,
                                                                                    monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from autointerp.store import append_results

    run = tmp_path / "data" / "runs" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("results"))
    append_results(run, "explanations", [{"hookpoint": SET, "latent": 1, "explanation": "kept", "model": "m"}])
    append_results(run, "scores", [{"score_id": "a", "hookpoint": SET, "latent": 1, "scorer": "embedding",
                                    "explanation": "kept", "auroc": 0.7, "n": 10, "n_failed": 0}])
    bad = run / "results" / "scores" / "part-0-garbage.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    store = RunStore(run)
    with caplog.at_level("WARNING", logger="autointerp.store"):
        scores = store.scores(SET)
    assert scores.auroc.tolist() == [0.7]  # the good part is read, the bad one skipped
    assert str(bad) in caplog.text and "move it aside" in caplog.text
    assert store.explanations(SET).explanation.tolist() == ["kept"]
    assert store.corrupt_parts() == [bad]
    # the app opens the run and says which file it skipped
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path / "data"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert any(str(bad) in w.value and "Move it aside" in w.value for w in at.warning)
    # moved aside, it is gone from every notice
    bad.rename(bad.with_name(bad.name + ".corrupt"))
    assert RunStore(run).corrupt_parts() == []
    # a corrupt activation file keeps its one-line error with the cache advice
    (run / "acts" / SET / "acts.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(AutointerpError, match="re-run `autointerp cache`"):
        RunStore(run).top_examples(SET, 0)


def test_latest_explanation_of_one_explainer(tiny_run, tmp_path):
    """A latent keeps every explainer's records; `model=` picks the newest of one explainer's."""
    import shutil

    from autointerp.store import append_results

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("results"))
    for text, model in (("old a", "a"), ("b's", "b"), ("new a", "a")):
        append_results(run, "explanations", [{"hookpoint": SET, "latent": 3, "explanation": text, "model": model}])
    store = RunStore(run)
    assert store.explanations(SET).explanation.tolist() == ["new a"]
    assert store.explanations(SET, model="b").explanation.tolist() == ["b's"]
    assert store.explanations(SET, model="a").explanation.tolist() == ["new a"]
    assert store.explanations(SET, model="c").empty


def test_token_matrix_is_memory_mapped_and_equals_the_parquet_one(tiny_run, tmp_path):
    import shutil

    store = RunStore(tiny_run)
    assert isinstance(store.tokens, np.memmap) and store.tokens.dtype == np.int32
    tokens = duckdb.sql(f"SELECT doc_id, pos, token_id FROM read_parquet('{tiny_run / 'tokens.parquet'}')").df()
    expected = np.zeros(store.tokens.shape, dtype=np.int32)
    expected[tokens.doc_id, tokens.pos] = tokens.token_id
    np.testing.assert_array_equal(np.asarray(store.tokens), expected)
    # a run cached before tokens.npy existed reads the same matrix from tokens.parquet
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("results", "tokens.npy"))
    legacy = RunStore(old)
    assert not isinstance(legacy.tokens, np.memmap)
    np.testing.assert_array_equal(legacy.tokens, expected)
    assert legacy.window_example(3, 1).tokens == store.window_example(3, 1).tokens
