"""The app's pages through streamlit.testing.v1.AppTest on a copy of the tiny run with results
written the way `autointerp explain/score` write them (and, for jobs, by a real job)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from autointerp import jobs

from autointerp.app import views
from autointerp.app.render import example_html
from autointerp.store import Example, RunStore, append_results

ROOT = Path(__file__).resolve().parents[2]
SET = "resid_post.2"
HOSTILE = '<img src=x onerror="boom()"> **bold** years'


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=120)


@pytest.fixture
def data(tmp_path, tiny_run, monkeypatch):
    """A copy of the tiny run with 6 explained latents (one failed), detection + embedding scores
    on 5 of them (AUROC rising with the latent's rank), and decisions for one score."""
    run = tmp_path / "data" / "runs" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("results"))  # other tests write results into the shared run
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path / "data"))
    store = RunStore(run)
    top, _ = store.latent_table(SET, sort="frequency", limit=6)
    latents = [int(x) for x in top.latent]
    texts = [HOSTILE, "dates and years", "rivers in Europe", "verbs of motion", "plural nouns"]
    append_results(run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": t, "model": "m",
                                          "strategy": "top", "n_examples": 20} for x, t in zip(latents, texts)]
                   + [{"hookpoint": SET, "latent": latents[5], "explanation": None, "raw": "gibberish",
                       "error": "unparseable explainer answer", "model": "m"}])
    scores, decisions = [], []
    for i, (x, t) in enumerate(zip(latents, texts)):
        for scorer, value in (("detection", 0.5 + 0.1 * i), ("embedding", 0.45 + 0.1 * i)):
            sid = uuid.uuid4().hex
            scores.append({"score_id": sid, "hookpoint": SET, "latent": x, "scorer": scorer, "explanation": t,
                           "auroc": value, "n": 40, "n_failed": i, "model": "m", "mode": "logprob",
                           "accuracy_per_decile": json.dumps({"0": 0.8, "1": 0.3 + 0.1 * i, "10": 0.9}),
                           "correlation_per_quantile": "{}"})
            if i == 0 and scorer == "detection":
                decisions = [{"score_id": sid, "hookpoint": SET, "latent": x, "scorer": scorer, "doc_id": 0,
                              "start": 1, "activating": a, "quantile": q, "prediction": p, "probability": pr,
                              "failed": p is None, "raw": "", "shown": "<script>x()</script>"}
                             for a, q, p, pr in ((True, 10, True, 0.9), (True, 1, False, 0.3), (False, 0, False, 0.2),
                                                 (False, 0, None, None))]
    append_results(run, "decisions", decisions)
    append_results(run, "scores", scores)
    return {"run": run, "store": store, "latents": latents, "data": tmp_path / "data"}


def test_overview_counts_explained_and_scored_latents(data):
    at = page("app.py").run()
    assert not at.exception, at.exception
    summary = at.dataframe[0].value.set_index("latent set")
    assert summary.loc[SET, "explained"] == 5 and summary.loc[SET, "explain failures"] == 1
    assert summary.loc[SET, "scored"] == 5 and summary.loc[SET, "mean detection"] == pytest.approx(0.7)
    assert summary.loc["mlp_neurons.1-topk4", "explained"] == 0
    assert any("5** of" in m.value for m in at.markdown)
    # no validation yet: the page says no score is known to measure anything, and how to check
    assert "No scorer has been validated on this run yet" in at.warning[0].value
    assert "autointerp validate" in at.warning[0].value
    # which model and engine computed the results (issue 21): these were written without an engine
    engines = at.dataframe[1].value
    assert set(zip(engines.results, engines.model, engines.engine)) == {
        ("explanations", "m", "not recorded"), ("scores", "m", "not recorded")}
    assert engines.set_index("results").loc["scores", "rows"] == 10
    append_results(data["run"], "scores", [{"score_id": uuid.uuid4().hex, "hookpoint": SET, "latent": 0,
                                            "scorer": "intruder", "model": "transformers:qwen1.5b",
                                            "engine": "transformers bfloat16 cpu", "accuracy": 0.5, "n": 20}])
    at = page("app.py").run()
    engines = at.dataframe[1].value
    assert ("scores", "transformers:qwen1.5b", "transformers bfloat16 cpu") in set(
        zip(engines.results, engines.model, engines.engine))


def test_overview_with_no_runs_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    at = page("app.py").run()
    assert not at.exception
    assert "make app" in at.info[0].value


def test_browse_sorts_filters_pages_and_searches(data):
    at = page("pages/1_Browse.py")
    at.query_params["set"] = SET
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    expected, total = data["store"].latent_table(SET, sort="frequency", limit=50)
    assert list(table.latent) == list(expected.latent) and total == 256
    assert {"explanation", "detection", "embedding"} <= set(table.columns)
    # sort by a scorer: the best-scored latent first, unscored latents last
    at.selectbox(key="sort").select("detection").run()
    assert list(at.dataframe[0].value.latent[:5]) == data["latents"][:5][::-1]
    # text filter, then score range
    at.text_input(key="text").input("years").run()
    assert set(at.dataframe[0].value.latent) == {data["latents"][0], data["latents"][1]}
    at.text_input(key="text").input("").run()
    at.slider(key="range-detection").set_value((0.75, 1.0)).run()
    assert set(at.dataframe[0].value.latent) == set(data["latents"][3:5])
    at.slider(key="range-detection").set_value((0.0, 1.0)).run()
    # paging: page 2 holds the next 50 by the chosen sort
    at.selectbox(key="sort").select("frequency").run()
    first = list(at.dataframe[0].value.latent)
    at.number_input(key="page").set_value(2).run()
    second = list(at.dataframe[0].value.latent)
    assert len(second) == 50 and not set(first) & set(second)
    # semantic search ranks by meaning: "calendar dates" finds the dates explanation first
    at.number_input(key="page").set_value(1).run()
    at.text_input(key="search").input("calendar dates").run()
    assert not at.exception, at.exception
    assert int(at.dataframe[0].value.latent.iloc[0]) == data["latents"][1]


def test_browse_searches_every_latent_set(data):
    """The search spans the run's sets when asked: another set's explanation that means the query
    is listed (with its set) above this set's weaker ones, from each set's index (issue 25)."""
    other = "mlp_neurons.1-topk4"
    append_results(data["run"], "explanations", [{"hookpoint": other, "latent": 3, "explanation": "days of the week",
                                                  "model": "m"}])
    at = page("pages/1_Browse.py")
    at.query_params["set"] = SET
    at.run()
    at.toggle(key="search-all").set_value(True).run()
    at.text_input(key="search").input("Monday, Tuesday and other weekdays").run()
    assert not at.exception, at.exception
    found = at.dataframe[0].value
    assert (found.hookpoint.iloc[0], int(found.latent.iloc[0])) == (other, 3)
    assert found.explanation.iloc[0] == "days of the week" and found.similarity.is_monotonic_decreasing
    assert set(found.hookpoint) == {SET, other} and len(found) == 6  # every good explanation of the run
    table = at.dataframe[1].value  # the set's own table keeps its hits, closest first
    assert set(table.latent) == set(data["latents"][:5])


def test_latent_page_shows_explanation_scores_examples_decisions_and_logit_lens(data):
    latent = data["latents"][0]
    at = page("pages/2_Latent.py")
    at.query_params.update({"set": SET, "latent": str(latent)})
    at.run()
    assert not at.exception, at.exception
    assert at.text[0].value == HOSTILE  # LLM text shown verbatim as text, never rendered
    scores = at.dataframe[0].value
    assert set(scores.scorer) == {"detection", "embedding"} and set(scores.failures) == {0}
    lens_top = at.dataframe[1].value
    assert len(lens_top) == 10 and lens_top.logit.is_monotonic_decreasing
    bodies = [el.proto.body for el in at.get("html")]
    n_top = len(data["store"].top_examples(SET, latent, 20))
    assert bodies[0].count('class="ai-example"') == n_top and "ai-act" in bodies[0]
    decisions = at.dataframe[3].value
    assert list(decisions.outcome) == ["right", "wrong", "right", "failed"]
    assert len(at.get("plotly_chart")) == 1


def test_latent_page_shows_a_failed_explanation_with_its_raw_answer(data):
    at = page("pages/2_Latent.py")
    at.query_params.update({"set": SET, "latent": str(data["latents"][5])})
    at.run()
    assert not at.exception
    assert "unparseable explainer answer" in at.warning[0].value and at.text[0].value == "gibberish"


def test_scores_page_correlations_and_deciles(data):
    at = page("pages/3_Scores.py").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 3
    rho = at.dataframe[0].value
    assert rho.loc["detection", "embedding"] == pytest.approx(1.0)  # same ranking of the 5 latents
    assert at.dataframe[1].value.loc["detection", "embedding"] == 5


def test_latent_page_launches_a_real_rescoring_job_and_shows_the_new_score(data, smollm2_dir):
    (data["data"] / "models").symlink_to(smollm2_dir.parent)  # reuse the converted SmolLM2
    latent = data["latents"][2]
    at = page("pages/2_Latent.py")
    at.query_params.update({"set": SET, "latent": str(latent)})
    at.run()
    at.checkbox(key="latent-job-explain").uncheck()
    at.text_input(key="latent-job-model").input("smollm2")
    at.multiselect(key="latent-job-scorers").set_value(["embedding"])
    at.button[-1].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert "Launched job" in at.success[0].value
    (job,) = jobs.list_jobs(data["data"])
    deadline = time.time() + 1200  # a guard against a hung job, not a time bound
    while job.state == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert job.state == "done", job.log_tail()
    history = RunStore(data["run"]).latent_results("scores", SET, latent)
    assert len(history[history.scorer == "embedding"]) == 2  # the new score joined the old one
    at.run()
    new = at.dataframe[0].value.set_index("scorer").loc["embedding"]
    assert new.model == "all-MiniLM-L6-v2" and new.auroc != pytest.approx(0.65)
    jobs_page = page("pages/4_Jobs.py").run()
    assert not jobs_page.exception
    assert any("done" in m.value for m in jobs_page.markdown)


def test_views_filter_and_page_on_a_frame(data):
    df = views.latent_frame(data["store"], SET)
    assert len(df) == 256 and df.explanation.notna().sum() == 5
    f = views.BrowseFilter(explained_only=True, score_ranges={"embedding": (0.5, 1.0)})
    got = views.filter_latents(df, f)
    assert set(got.latent) == set(data["latents"][1:5])
    assert list(views.page_of(got, "embedding", True, 1, 2).latent) == data["latents"][4:2:-1]


def test_example_html_escapes_corpus_text():
    ex = Example(0, 1, [1, 2, 3], ["<script>alert(1)</script>", '<img src=x onerror="boom()">', " ok"],
                 [2.0, 0.0, 1.0])
    out = example_html(ex)
    assert "<script>" not in out and "<img" not in out
    assert "&lt;script&gt;" in out and "&lt;img src=x onerror=&quot;boom()&quot;&gt;" in out
    assert 'title="2.000"' in out and "rgba(255,120,0,0.50)" in out


def test_scores_carry_their_intervals_in_browse_and_on_the_latent_page(data):
    """Each score shows its 95 % interval; Browse sorts by and filters on the lower bound and marks
    intervals that hold chance; scores stored before intervals show '–' (issue 20, B)."""
    narrow, wide = data["latents"][1], data["latents"][2]
    texts = {narrow: "dates and years", wide: "rivers in Europe"}
    append_results(data["run"], "scores", [
        {"score_id": uuid.uuid4().hex, "hookpoint": SET, "latent": x, "scorer": "detection", "explanation": texts[x],
         "auroc": value, "auroc_lo": lo, "auroc_hi": hi, "n": 40, "n_failed": 0, "model": "m",
         "mode": "logprob-calibrated", "decision_rule": "rank: top n_activating of the test set"}
        for x, value, lo, hi in ((narrow, 0.93, 0.8, 0.97), (wide, 0.95, 0.45, 1.0))] + [
        # an intervention score (nats, chance 0) with its t interval over the steered prompts
        {"score_id": uuid.uuid4().hex, "hookpoint": SET, "latent": narrow, "scorer": "intervention",
         "explanation": texts[narrow], "intervention_score": 0.4, "intervention_score_lo": -0.1,
         "intervention_score_hi": 0.9, "target_kl": 1.0, "n": 8, "n_failed": 0}])
    at = page("pages/1_Browse.py")
    at.query_params["set"] = SET
    at.run()
    assert not at.exception, at.exception
    rows = at.dataframe[0].value.set_index("latent")
    assert rows.loc[narrow, "detection 95% CI"] == "[0.80, 0.97]"
    assert rows.loc[wide, "detection 95% CI"] == "[0.45, 1.00] ≈ chance"
    assert rows.loc[data["latents"][3], "detection 95% CI"] == "–"  # stored before intervals
    assert rows.loc[narrow, "intervention 95% CI"] == "[-0.10, 0.90] ≈ chance"
    at.selectbox(key="sort").select("detection").run()
    assert list(at.dataframe[0].value.latent[:2]) == [wide, narrow]
    at.selectbox(key="sort").select("detection low").run()
    assert list(at.dataframe[0].value.latent[:2]) == [narrow, wide]
    at.multiselect(key="above-chance").select("detection").run()
    assert list(at.dataframe[0].value.latent) == [narrow]
    at = page("pages/2_Latent.py")
    at.query_params.update({"set": SET, "latent": str(narrow)})
    at.run()
    assert not at.exception
    scores = at.dataframe[0].value.set_index("scorer")
    assert scores.loc["detection", "95% CI"] == "[0.80, 0.97]" and scores.loc["embedding", "95% CI"] == "–"
    assert scores.loc["intervention", "95% CI"] == "[-0.10, 0.90] ≈ chance"
    assert scores.loc["detection", "decisions"].startswith("rank")


def test_intruder_scores_show_without_an_explanation_in_browse_latent_and_scores(data):
    """An intruder score judges the latent: Browse shows it with its interval against chance 0.2
    beside any explanation (or none), the Latent page lists it, the Scores page includes it (23.1)."""
    explained, failed = data["latents"][1], data["latents"][5]  # the latter's only explanation failed
    append_results(data["run"], "scores", [
        {"score_id": uuid.uuid4().hex, "hookpoint": SET, "latent": x, "scorer": "intruder", "explanation": None,
         "accuracy": acc, "accuracy_lo": lo, "accuracy_hi": hi, "n": 20, "n_failed": 0, "model": "m",
         "mode": "logprob"}
        for x, acc, lo, hi in ((explained, 0.85, 0.64, 0.95), (failed, 0.3, 0.15, 0.52))])
    at = page("pages/1_Browse.py")
    at.query_params["set"] = SET
    at.run()
    assert not at.exception, at.exception
    rows = at.dataframe[0].value.set_index("latent")
    assert rows.loc[explained, "intruder"] == pytest.approx(0.85)
    assert rows.loc[explained, "intruder 95% CI"] == "[0.64, 0.95]"
    assert rows.loc[failed, "intruder 95% CI"] == "[0.15, 0.52] ≈ chance"  # chance is 0.2, not 0.5
    assert rows.loc[explained, "detection"] == pytest.approx(0.6)  # the explanation's scores stay beside it
    at = page("pages/2_Latent.py")
    at.query_params.update({"set": SET, "latent": str(failed)})
    at.run()
    assert not at.exception, at.exception
    scores = at.dataframe[0].value.set_index("scorer")
    assert scores.loc["intruder", "accuracy"] == pytest.approx(0.3)
    assert scores.loc["intruder", "95% CI"] == "[0.15, 0.52] ≈ chance"
    at = page("pages/3_Scores.py")
    at.run()
    assert not at.exception, at.exception


def test_the_launch_form_shows_what_the_selection_the_set_and_the_run_would_cost(data):
    """Measured rates extrapolated (issue 25): the selection, the whole set, the whole run."""
    from autointerp.config import InterpretConfig
    from autointerp.config import COST_S
    from autointerp.app.views import campaign_estimate, campaign_table

    cfg = InterpretConfig()
    per = sum(COST_S[cfg.model])
    text = campaign_estimate({f"resid_post.{i}": 131072 for i in range(8)}, "resid_post.0", 3, cfg)
    assert f"measured {per:.0f} s per latent" in text
    assert "all 131,072 latents of resid_post.0 about " + f"{131072 * per / 86400:,.0f} days" in text
    assert "(1,048,576 latents in 8 sets) about " + f"{8 * 131072 * per / 86400:,.0f} days" in text
    fewer = campaign_estimate({"a": 10}, "a", 1, InterpretConfig(scorers=["detection"]))
    assert f"measured {COST_S[cfg.model][0] + COST_S[cfg.model][1] / 3:.0f} s per latent" in fewer
    served = campaign_estimate({"a": 10}, "a", 1, InterpretConfig(backend="openai", model="smollm2"))
    assert "smollm2 (openai)" in served and "not measured yet" in served
    assert f"measured {sum(COST_S['smollm2']):.0f} s per latent" in served
    table = campaign_table({f"resid_post.{i}": 131072 for i in range(8)}, cfg).set_index("latent set")
    assert table.loc["whole run", "latents"] == 1_048_576 and len(table) == 9
    assert table.loc["resid_post.3", "2 CPU cores"] == f"{131072 * per / 86400:,.0f} days"
    at = page("pages/1_Browse.py")
    at.query_params["set"] = SET
    at.run()
    assert not at.exception, at.exception
    assert any("the whole run" in c.value for c in at.caption), [c.value for c in at.caption]
    per_set = at.dataframe[1].value  # the expander's table: each set of the run, then the whole run
    assert list(per_set["latent set"]) == [*data["store"].hookpoints(), "whole run"]
