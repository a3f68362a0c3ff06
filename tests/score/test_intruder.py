"""Intruder scoring (issue 23.1): the prompts' make-up, the read-out against the backend's own
probabilities, the Wilson interval, storage without an explanation, and the views. LLM runs use the
tiny random Llama through the real transformers backend (its answers are garbage: that is how
unparseable generate-mode answers are produced for real)."""

from collections import Counter

import numpy as np
import pytest

from autointerp.config import AnalyzeConfig, InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.runs.interpret import run_score
from autointerp.llm.base import LLMConfig
from autointerp.llm.transformers_backend import TransformersClient
from autointerp.score.metrics import wilson_ci
from autointerp.explain.prompts import INTRUDER_SYSTEM, intruder_messages
from autointerp.explain.sampling import SamplingConfig, scoring_examples
from autointerp.score.intruder import (INTRUDER_ACTIVATING, INTRUDER_PREFIX, IntruderConfig, _parse_choice,
                                         intruder_prompts, score_intruder)
from autointerp.store import RunStore, append_results

SET = "resid_post.2"


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4))


def _test_set(store, n_negative=10):
    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    latent = int(page.latent[0])
    act, neg = scoring_examples(store, SET, latent, SamplingConfig(test_per_quantile=1, n_negative=n_negative))
    return latent, act, neg


def test_each_prompt_holds_one_silent_window_and_activating_windows_equally(store):
    _, act, neg = _test_set(store)
    prompts = intruder_prompts(act, neg, IntruderConfig(seed=7))
    assert len(prompts) == len(neg)  # one prompt per silent window, each the intruder once
    keys = lambda e: (e.doc_id, e.start)  # noqa: E731
    assert sorted(keys(p.windows[p.intruder]) for p in prompts) == sorted(keys(e) for e in neg)
    act_keys = {keys(e) for e in act}
    uses = Counter()
    for p in prompts:
        others = [keys(w) for i, w in enumerate(p.windows) if i != p.intruder]
        assert len(others) == INTRUDER_ACTIVATING and set(others) <= act_keys
        assert len(set(others)) == len(others)  # never the same window twice in one prompt
        uses.update(others)
        # the intruder is marked too, in the shape of a real activating window (not left bare)
        assert "<<" in p.texts[p.intruder]
    # a seeded cycle: every activating window shown, as often as any other, give or take one
    assert set(uses) == act_keys and max(uses.values()) - min(uses.values()) <= 1
    assert [p.intruder for p in prompts] == [p.intruder for p in intruder_prompts(act, neg, IntruderConfig(seed=7))]
    assert len({p.intruder for p in prompts}) > 1  # the position varies


@pytest.mark.parametrize("calibrate", [False, True])
def test_logprob_calls_follow_the_backends_probabilities(store, tiny_llm, calibrate):
    _, act, neg = _test_set(store)
    cfg = IntruderConfig(seed=3, calibrate=calibrate)
    summary, records = score_intruder(tiny_llm, act, neg, cfg)
    prompts = intruder_prompts(act, neg, cfg)
    direct = np.array(tiny_llm.answer_probs([intruder_messages(INTRUDER_SYSTEM, p.texts) for p in prompts],
                                            [str(j) for j in range(1, 6)],
                                            assistant_prefixes=[INTRUDER_PREFIX] * len(prompts)))
    right = 0
    for i, (r, p) in enumerate(zip(records, prompts)):
        assert r["slot"] == p.intruder and (r["doc_id"], r["start"]) == (p.windows[p.intruder].doc_id,
                                                                         p.windows[p.intruder].start)
        q = direct[i]
        if calibrate:  # divided by the mean of every other prompt's probability at each position
            q = q / np.delete(direct, i, axis=0).mean(axis=0)
        q = q / q.sum()
        assert r["probability"] == pytest.approx(q[p.intruder], abs=1e-6)
        assert r["prediction"] == (int(np.argmax(q)) == p.intruder)
        right += r["prediction"]
    assert summary["n"] == len(neg) and summary["n_failed"] == 0
    assert summary["decision_rule"].startswith("largest" if calibrate else "most probable")
    assert summary["accuracy"] == pytest.approx(right / len(neg))
    assert (summary["accuracy_lo"], summary["accuracy_hi"]) == pytest.approx(wilson_ci(right, len(neg)))


def test_calibration_removes_a_position_bias():
    """A reader that always favours the last place picks it every time (chance); divided by the
    position prior of the other prompts, a small real preference for the intruder wins."""
    from autointerp.score.intruder import position_calibration

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 40)
    read = []
    for t in truth:
        p = np.array([0.12, 0.12, 0.12, 0.12, 0.52])
        p[t] += 0.05
        read.append(p / p.sum())
    raw_right = np.mean([np.argmax(p) == t for p, t in zip(read, truth)])
    w = position_calibration(read)
    cal_right = np.mean([np.argmax(p * wi) == t for p, wi, t in zip(read, w, truth)])
    assert raw_right == pytest.approx(np.mean(truth == 4)) and cal_right > 0.9
    assert position_calibration([read[0], None]) == [pytest.approx(np.ones(5))] * 2  # too few to estimate


def test_wilson_interval_known_values():
    assert wilson_ci(10, 20) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    assert wilson_ci(20, 20) == pytest.approx((0.8389, 1.0), abs=1e-4)
    assert wilson_ci(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson_ci(0, 0) == (None, None)


def test_generate_mode_unparseable_answers_are_counted_failures(store, tiny_llm):
    _, act, neg = _test_set(store, n_negative=4)
    summary, records = score_intruder(tiny_llm, act, neg, IntruderConfig(mode="generate", seed=1))
    assert summary["n"] + summary["n_failed"] == len(neg)
    for r in records:
        assert r["failed"] == (_parse_choice(r["raw"], 5) is None)
    assert _parse_choice("The intruder is (3).", 5) == 2 and _parse_choice("(9)", 5) is None
    assert _parse_choice("no idea", 5) is None


def test_intruder_scores_unexplained_latents_and_stays_current_across_explanations(tiny_run, tiny_llm, fresh_copy):
    from autointerp.app.views import latent_frame, latent_page, with_interval_text

    run = fresh_copy(tiny_run, "intruder")
    store = RunStore(run)
    page, _ = store.latent_table(SET, sort="frequency", limit=2)
    latents = [int(x) for x in page.latent]
    cfg = InterpretConfig(run=str(run), hookpoint=SET, latents=latents, scorers=["intruder"], test_per_quantile=1,
                          n_negative=6, chunk=2)
    rows = run_score(cfg, client=tiny_llm)  # no explanation exists: intruder alone needs none
    assert {r["latent"] for r in rows} == set(latents) and all(r["explanation"] is None for r in rows)
    assert all(r["n"] == 6 and 0 <= r["accuracy"] <= 1 and r["model"] == tiny_llm.name for r in rows)
    # every result records the engine that computed it (issue 21): backend, dtype, device
    assert {r["engine"] for r in rows} == {"transformers float32 cpu"}
    assert store.engines().values.tolist()[0][:4] == ["scores", tiny_llm.name, "transformers float32 cpu", 2]
    current = store.current_scores(SET)
    assert set(current.latent) == set(latents) and set(current.scorer) == {"intruder"}
    assert run_score(cfg, client=tiny_llm) == []  # a rerun has nothing left to do
    # explaining the latent later does not hide its intruder score (it judges the latent, not a text)
    append_results(run, "explanations", [{"hookpoint": SET, "latent": latents[0], "explanation": "commas",
                                          "model": "human"}])
    assert set(store.current_scores(SET).latent) == set(latents)
    assert run_score(cfg, client=tiny_llm) == []  # still nothing to do: no new explanation changes it
    frame = with_interval_text(latent_frame(store, SET)).set_index("latent")  # the text Browse shows
    first = next(r for r in rows if r["latent"] == latents[0])
    assert frame.loc[latents[0], "intruder"] == pytest.approx(first["accuracy"])
    assert frame.loc[latents[0], "explanation"] == "commas"
    assert frame.loc[latents[0], "intruder 95% CI"].startswith("[")
    lp = latent_page(store, SET, latents[0])
    assert list(lp.scores.scorer) == ["intruder"]
    # its decisions read as right / wrong by whether the intruder was picked
    from autointerp.app.views import decisions_view

    d = decisions_view(store, lp.scores.score_id.iloc[0])
    assert set(d.outcome) <= {"right", "wrong"}
    assert (d.outcome == "right").mean() == pytest.approx(first["accuracy"])


def test_intruder_is_refused_where_an_explanation_is_the_point(tiny_run):
    from autointerp.runs.studies import run_sampling
    from autointerp.runs.validity import run_validate

    with pytest.raises(AutointerpError, match="scores the latent, not its explanation") as e:
        run_validate(InterpretConfig(run=str(tiny_run), hookpoint=SET, random=3, scorers=["detection", "intruder"]))
    assert "\n" not in str(e.value)
    with pytest.raises(AutointerpError, match="every sampling strategy would get the same score"):
        run_sampling(AnalyzeConfig(run=str(tiny_run), hookpoint=SET, random=3, scorers=["intruder"]))
