"""A small version of bench/scale.py's run (issue 25): what the scale work changed answers as
before. The score table pivoted in DuckDB equals the pandas pivot of the current scores (stale,
failed and explanation-free scores included); the Overview's set summary counted in DuckDB equals
the counts from the long tables; a Browse page's interval text equals the per-row text; and the
generator writes what it says, or refuses in one line when the disk is short."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from autointerp import analysis
from autointerp.analysis.scores import headline_interval
from autointerp.app import views
from autointerp.core.errors import AutointerpError
from autointerp.store import RunStore, append_results

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import scale  # noqa: E402

SETS, LATENTS, ROWS, TOKENS = 2, 512, 60_000, 64_000


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("scale") / "run"
    scale.make_run(run, SETS, LATENTS, ROWS, TOKENS)
    h = scale.set_name(0)
    # what a real campaign adds: a newer explanation (the old one's scores become stale), a failed
    # score, a failed explanation, and an explanation-free scorer
    append_results(run, "explanations", [{"hookpoint": h, "latent": 0, "explanation": "re-explained", "model": "m"},
                                         {"hookpoint": h, "latent": 2, "explanation": None, "error": "bad answer",
                                          "model": "m"}])
    append_results(run, "scores", [
        {"score_id": "f1", "hookpoint": h, "latent": 1, "scorer": "detection", "auroc": None, "n": 0, "n_failed": 20,
         "explanation": RunStore(run).current_explanations(h).set_index("latent").explanation[1]},
        {"score_id": "i5", "hookpoint": h, "latent": 5, "scorer": "intruder", "accuracy": 0.6, "accuracy_lo": 0.4,
         "accuracy_hi": 0.8, "n": 20, "n_failed": 0}])
    return run


def test_the_generator_writes_a_sorted_run_of_the_size_asked(run):
    store = RunStore(run)
    assert store.hookpoints() == [scale.set_name(0), scale.set_name(1)]
    acts = pq.read_table(run / "acts" / scale.set_name(0) / "acts.parquet").to_pandas()
    assert 0.99 * ROWS / SETS <= len(acts) <= ROWS / SETS
    assert (np.diff(acts.latent.to_numpy()) >= 0).all()
    assert all((np.diff(g.value.to_numpy()) <= 0).all() for _, g in acts.groupby("latent"))  # value desc
    freq = store.latent_table(scale.set_name(0), limit=LATENTS)[0].frequency
    assert freq.max() / freq[freq > 0].min() > 100  # frequencies span decades
    assert store.n_latents(scale.set_name(0)) == LATENTS and store.info["n_tokens"] == TOKENS


def test_the_score_table_pivoted_in_duckdb_equals_the_pandas_pivot(run):
    store = RunStore(run)
    for hookpoint in (None, scale.set_name(0)):
        sql = analysis.score_table(store, hookpoint)
        pandas = analysis.score_table(store, hookpoint, scores=store.current_scores(hookpoint))
        pd.testing.assert_frame_equal(sql.reset_index(drop=True), pandas.reset_index(drop=True), check_dtype=False)
    table = analysis.score_table(store, scale.set_name(0)).set_index("latent")
    assert list(table.columns[1:]) == ["detection", "fuzzing", "intruder"]
    assert 0 not in table.index  # its scores scored the old explanation: none is current
    assert np.isnan(table.detection[1]) and not np.isnan(table.fuzzing[1])  # a failed score is NaN
    assert table.intruder[5] == 0.6


def test_the_set_summary_counted_in_duckdb_equals_the_long_tables(run):
    store = RunStore(run)
    summary = views.set_summary(store).set_index("latent set")
    newest = store.explanations()
    current = store.current_explanations()
    table = analysis.score_table(store, scores=store.current_scores())
    for hp in store.hookpoints():
        assert summary.loc[hp, "explained"] == (current.hookpoint == hp).sum()
        assert summary.loc[hp, "explain failures"] == newest[newest.hookpoint == hp].explanation.isna().sum()
        assert summary.loc[hp, "scored"] == (table.hookpoint == hp).sum()
        assert summary.loc[hp, "mean fuzzing"] == pytest.approx(table[table.hookpoint == hp].fuzzing.mean())
    assert summary.loc[scale.set_name(0), "explain failures"] == 1


def test_the_frame_s_pivoted_bounds_equal_the_per_row_intervals(run):
    """latent_frame's scores and 95% bounds come pivoted from DuckDB; the long table of current
    scores and analysis.headline_interval (the per-row reference) give the same numbers."""
    store = RunStore(run)
    frame = views.latent_frame(store, scale.set_name(0)).set_index("latent")
    current = store.current_scores(scale.set_name(0))
    lo, hi = headline_interval(current)
    long = current.assign(value=analysis.headline(current), lo=lo, hi=hi)
    assert len(long) > 100
    for row in long.itertuples():
        got = frame.loc[row.latent, [row.scorer, f"{row.scorer} low", f"{row.scorer} high"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, [row.value, row.lo, row.hi], equal_nan=True)
    unscored = frame.index.difference(long.latent)
    assert len(unscored) and frame.loc[unscored, "detection low"].isna().all()


def test_a_browse_page_s_interval_text_equals_the_per_row_text(run):
    store = RunStore(run)
    frame = views.latent_frame(store, scale.set_name(0))
    page = views.with_interval_text(views.page_of(frame, "detection", True, 1, 50))
    for scorer in ("detection", "fuzzing", "intruder"):
        expected = [views.interval_text(lo, hi, scorer) for lo, hi in
                    zip(page[f"{scorer} low"], frame.set_index("latent").loc[page.latent, f"{scorer} high"])]
        assert page[f"{scorer} 95% CI"].tolist() == expected
        assert f"{scorer} high" not in page.columns
    cols = list(page.columns)
    assert cols.index("detection") < cols.index("detection 95% CI") < cols.index("detection low")


def test_the_generator_refuses_in_one_line_when_the_disk_is_short(tmp_path):
    with pytest.raises(AutointerpError) as e:
        scale.check_disk(tmp_path, 10**15)
    assert "\n" not in str(e.value) and "GB free" in str(e.value) and "--dir" in str(e.value)


@pytest.mark.slow
def test_the_search_bench_indexes_every_explanation_and_matches_exact_search(run):
    """bench/scale.py's search section on a small run of its generator: every current explanation
    lands in its set's index (under its text's md5, so the app's catch-up finds nothing to embed),
    and the index's top 10 agree with exact search's at the issue's recall@10 >= 0.95 (HNSW is
    approximate even here: 0.975-1.0 measured over repeated builds of these 512-vector sets)."""
    fig = scale.Figures("small")
    scale.search_bench(run, RunStore(run), fig, n_queries=8, rng=np.random.default_rng(0), pool_size=400)
    assert fig.rows["explanations in the search index"][0].startswith(f"{SETS * LATENTS:,}")
    assert fig.rows["search: check every set's index is current (once per new part)"][0].endswith(" ms")
    assert RunStore(run).unindexed_explanations(scale.set_name(0), "all-MiniLM-L6-v2").empty
    assert float(fig.rows["search recall@10 against exact search"][0].split()[0]) >= 0.95
