"""Output-based explanations (`explain --kind output`, `score --kind output`), old result parts
without the kind column, the Latent page's output explanation and Steer panel, and the Scores
page's Fig. 4 figures and their export, on copies of the tiny run with the tiny random Llama."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path


import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from streamlit.testing.v1 import AppTest

from autointerp import analysis

from autointerp.app import figures
from autointerp.config import ExportConfig, InterpretConfig
from autointerp.app.export import export_run
from autointerp.runs.interpret import run_explain, run_score
from autointerp.llm.base import LLMConfig
from autointerp.llm.transformers_backend import TransformersClient
from autointerp.store import RESULT_SCHEMAS, RunStore, append_results
from fixture_rows import explain_as_scored

ROOT = Path(__file__).resolve().parents[2]
SET = "resid_post.2"
STORED = "STORED STEERED TEXT"
GOOD = "[EXPLANATION]: Makes the model talk about ships"


class FakeExplainer:
    """Answers a good explanation for prompts that show the stored steered text, gibberish (two
    lines, no tag: unparseable) otherwise, and keeps every prompt it was sent."""

    name = "fake-explainer"

    def __init__(self):
        self.prompts: list[str] = []

    def generate(self, batch: list[list[dict]], max_tokens: int = 60) -> list[str]:
        texts = [m[-1]["content"] for m in batch]
        self.prompts += texts
        return [GOOD if STORED in t else "no idea\nat all" for t in texts]


@pytest.fixture
def run(tiny_run, fresh_copy) -> Path:
    return fresh_copy(tiny_run, "tiny")


def _top(run: Path, n: int) -> list[int]:
    page, _ = RunStore(run).latent_table(SET, sort="frequency", limit=n)
    return [int(x) for x in page.latent]


def _stored_intervention(run: Path, latent: int, explanation: str) -> str:
    """An input explanation's intervention score with steered continuations, as `score` writes them."""
    sid = uuid.uuid4().hex
    base = {"score_id": sid, "hookpoint": SET, "latent": latent}
    append_results(run, "intervention_examples", [
        {**base, "target_kl": 1.0, "direction": "latent", "prompt": i, "doc_id": i, "prompt_text": f"prompt {i}",
         "clean_text": f"clean {i}", "steered_text": f"{STORED} {i}"} for i in range(2)])
    append_results(run, "interventions", [{**base, "target_kl": 1.0, "alpha": 3.0, "kl": 1.02, "reached": True,
                                           "score": 0.5, "explanation": explanation, "n": 2}])
    append_results(run, "scores", [{**base, "scorer": "intervention", "explanation": explanation,
                                    "intervention_score": 0.5, "target_kl": 1.0, "n": 2, "n_failed": 0}])
    return sid


def test_output_explanations_are_stored_beside_input_ones_and_scored_apart(run, tiny_model_dir):
    latents = _top(run, 2)
    append_results(run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": f"input {x}", "model": "m"}
                                         for x in latents])
    input_sid = _stored_intervention(run, latents[0], f"input {latents[0]}")
    cfg = InterpretConfig(run=str(run), hookpoint=SET, latents=latents, kind="output", target_kls=[0.003],
                          n_intervention_prompts=2, prompt_tokens=12, new_tokens=4, scorers=["intervention"])
    fake = FakeExplainer()
    rows = run_explain(cfg, client=fake)
    # latent 0 reuses its stored continuations; latent 1 is steered now, and its answer does not parse
    assert rows[0]["explanation"] == "Makes the model talk about ships" and "stored" in rows[0]["strategy"]
    assert rows[1]["explanation"] is None and rows[1]["error"] == "unparseable explainer answer"
    assert rows[1]["strategy"] == "steered kl=0.003 (steered)" and rows[1]["n_examples"] == 2
    assert "Clean:" in fake.prompts[1] and "Steered:" in fake.prompts[1] and STORED not in fake.prompts[1]
    store = RunStore(run)
    assert list(store.explanations(SET).explanation) == [f"input {x}" for x in sorted(latents)]
    out = store.explanations(SET, kind="output").set_index("latent")
    assert set(out.kind) == {"output"} and out.loc[latents[0], "explanation"] == "Makes the model talk about ships"
    assert out.loc[latents[1], "explanation"] is None and out.loc[latents[1], "raw"] == "no idea\nat all"
    assert list(store.latent_results("explanations", SET, latents[0]).explanation) == [f"input {latents[0]}"]
    assert run_explain(cfg, client=fake) == []  # a rerun resumes per kind: both output records exist
    # score --kind output: the intervention score of the output explanation, kept apart from the input one's
    scorer = TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=8))
    scored = run_score(cfg, client=scorer)  # latent 1's failed output explanation is skipped
    assert [(r["latent"], r["explanation_kind"]) for r in scored] == [(latents[0], "output")]
    store = RunStore(run)
    assert list(store.scores(SET).score_id) == [input_sid]
    mine = store.scores(SET, kind="output")
    assert list(mine.explanation) == ["Makes the model talk about ships"] and mine.intervention_score.notna().all()
    assert set(store.interventions(SET, kind="output").score_id) == set(mine.score_id)
    assert set(store.interventions(SET).score_id) == {input_sid}


def test_old_parts_without_the_kind_column_read_as_input(run):
    old = pa.schema([f for f in RESULT_SCHEMAS["explanations"] if f.name != "kind"])
    part = run / "results" / "explanations" / "part-1-1.parquet"
    part.parent.mkdir(parents=True)
    row = {"hookpoint": SET, "latent": 3, "explanation": "old input", "created_at": pd.Timestamp("2024-01-01")}
    pq.write_table(pa.table({f.name: [row.get(f.name)] for f in old}, schema=old), part)
    store = RunStore(run)
    assert list(store.explanations(SET).explanation) == ["old input"]  # no part has the column at all
    assert store.explanations(SET, kind="output").empty
    append_results(run, "explanations", [{"hookpoint": SET, "latent": 3, "explanation": "new output",
                                          "kind": "output"}])
    assert list(store.explanations(SET).explanation) == ["old input"]  # NULL under union_by_name = input
    assert list(store.explanations(SET, kind="output").explanation) == ["new output"]
    assert list(store.latent_results("explanations", SET, 3, explanation_kind=None).explanation) == \
        ["new output", "old input"]


def _latent_page(latent: int) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "2_Latent.py"), default_timeout=120)
    at.query_params.update({"set": SET, "latent": str(latent)})
    return at.run()


def _steer(at: AppTest, prompt: str, **value) -> AppTest:
    at.text_input(key="steer-prompt").input(prompt)
    if "alpha" in value:
        at.radio(key="steer-by").set_value("strength α")
        at.run()
        at.number_input(key="steer-alpha").set_value(value["alpha"])
    else:
        at.radio(key="steer-by").set_value("target KL")
        at.run()
        at.number_input(key="steer-kl").set_value(value["kl"])
    return at.button(key="steer-go").click().run()


def test_latent_page_shows_the_output_explanation_and_steers_a_prompt(run):
    latent = _top(run, 1)[0]
    append_results(run, "explanations", [
        {"hookpoint": SET, "latent": latent, "explanation": "input side", "model": "m", "kind": "input"},
        {"hookpoint": SET, "latent": latent, "explanation": "<b>makes it talk about ships</b>", "model": "m",
         "kind": "output", "strategy": "steered kl=1 (steered)"}])
    at = _latent_page(latent)
    assert not at.exception, at.exception
    assert [t.value for t in at.text[:2]] == ["input side", "<b>makes it talk about ships</b>"]  # plain text
    prompt = "The river flows through the old city of"
    at = _steer(at, prompt, alpha=0.0)
    assert not at.exception and not at.error, (at.exception, at.error)
    clean, steered = (t.value for t in at.text[-2:])
    assert clean and clean == steered  # alpha 0 adds nothing
    at = _steer(at, prompt, alpha=300.0)
    assert not at.exception and not at.error
    clean2, steered2 = (t.value for t in at.text[-2:])
    assert clean2 == clean and steered2 != clean
    at = _steer(at, prompt, kl=0.0)
    assert "not positive" in at.error[0].value and len(at.error) == 1
    at = _steer(at, "word " * 300, alpha=1.0)
    assert "exceeds" in at.error[0].value and "context of 256 tokens" in at.error[0].value


def test_scores_page_shows_fig4_and_exports_it(run, tmp_path):
    latents = _top(run, 5)
    scores, steered = [], []
    for i, x in enumerate(latents):
        sid = uuid.uuid4().hex
        scores += [{"score_id": sid, "hookpoint": SET, "latent": x, "scorer": "intervention", "explanation": "e",
                    "intervention_score": 0.2 * i, "target_kl": 1.0, "n": 8},
                   {"score_id": uuid.uuid4().hex, "hookpoint": SET, "latent": x, "scorer": "fuzzing",
                    "explanation": "e", "auroc": 0.5 + 0.05 * i + 0.01 * (i % 2), "n": 40, "n_failed": 0}]
        steered += [{"score_id": sid, "hookpoint": SET, "latent": x, "target_kl": t, "reached": True,
                     "score": t * (1 + 0.1 * i), "random_explanation_score": 0.1 * t,
                     "random_direction_score": -0.1 * i} for t in (0.1, 1.0, 3.0)]
    append_results(run, "interventions", steered)
    append_results(run, "scores", scores)
    explain_as_scored(run, scores)
    at = AppTest.from_file(str(ROOT / "pages" / "3_Scores.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 4  # distributions, correlations, and the two Fig. 4 panels
    assert "Intervention scores (the paper's Fig. 4)" in [h.value for h in at.subheader]
    store = RunStore(run)
    by_kl = analysis.intervention_by_kl(store, SET)
    assert len(by_kl) == 9 and set(by_kl.n) == {5}
    row = by_kl[(by_kl.target_kl == 1.0) & (by_kl.condition == "latent, true explanation")].iloc[0]
    values = [1 + 0.1 * i for i in range(5)]
    half = stats.t.ppf(0.975, 4) * stats.sem(values)
    assert row["mean"] == pytest.approx(np.mean(values)) and row.ci_hi == pytest.approx(np.mean(values) + half)
    fig = figures.intervention_vs_kl(by_kl)
    assert [t.name for t in fig.data] == list(analysis.INTERVENTION_CONDITIONS)
    assert all(len(t.error_y.array) == 3 for t in fig.data) and fig.layout.xaxis.type == "log"
    pairs = analysis.intervention_vs_fuzzing(analysis.score_table(store, SET))
    assert sorted(pairs.latent) == sorted(latents)
    fig = figures.intervention_vs_fuzzing(pairs)
    r = stats.pearsonr(pairs.fuzzing, pairs.intervention).statistic
    assert [t.mode for t in fig.data] == ["markers", "lines"] and len(fig.data[0].x) == 5
    assert f"Pearson r = {r:.2f}, n = 5" in fig.layout.title.text
    written = export_run(ExportConfig(run=str(run), out=str(tmp_path / "export"), formats=[]))
    names = {p.name for p in written}
    assert {"intervention_vs_kl.csv", "intervention_vs_fuzzing.csv"} <= names


def test_kind_is_checked_and_validation_refuses_output(run):
    from autointerp.core.errors import AutointerpError
    from autointerp.runs.interpret import open_for_scoring

    cfg = InterpretConfig(run=str(run), hookpoint=SET, latents=[0], kind="outputs")
    with pytest.raises(AutointerpError, match="unknown explanation kind 'outputs'"):
        run_explain(cfg, client=FakeExplainer())
    with pytest.raises(AutointerpError, match="only by `autointerp score`"):
        open_for_scoring(dataclasses.replace(cfg, kind="output", scorers=["detection"]))
