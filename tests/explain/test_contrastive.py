"""Contrastive explanations (issue 23.2): the explainer also sees similar silent windows; they are
recorded as shown, never tested on, and the record says which explainer wrote it. The LLM is the
tiny random Llama through the real transformers backend (its answers are garbage: failures)."""

import json

import pytest

from autointerp.core.errors import AutointerpError
from autointerp.explain.explainers import CONTRAST_WINDOWS, ExplainConfig, explain_latents
from autointerp.llm.base import LLMConfig
from autointerp.llm.transformers_backend import TransformersClient
from autointerp.explain.prompts import explainer_messages
from autointerp.explain.sampling import SamplingConfig, explanation_examples, scoring_examples

SET = "resid_post.2"


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4))


def _sparse_latent(store) -> int:
    page, _ = store.latent_table(SET, sort="frequency", limit=256)
    counts = {int(x): len(store.active_windows(SET, int(x))) for x in page.latent}
    return min((c, x) for x, c in counts.items() if c >= 16)[1]


def test_contrastive_explainer_shows_silent_windows_and_records_them(store, tiny_llm):
    latent = _sparse_latent(store)
    sampling = SamplingConfig(n_explain=6, test_per_quantile=1, n_negative=10)
    (row,) = explain_latents(tiny_llm, store, SET, [latent], sampling, ExplainConfig(explainer="contrastive"))
    assert row["explainer"] == "contrastive" and row["n_examples"] == 6
    shown = [tuple(k) for k in json.loads(row["shown"])]
    examples = explanation_examples(store, SET, latent, sampling)
    assert shown[:6] == [(e.doc_id, e.start) for e in examples]
    contrast = shown[6:]
    assert len(contrast) == CONTRAST_WINDOWS
    active = store.active_windows(SET, latent)
    fires = set(zip(active.doc_id, active.w))
    assert all((d, (s - 1) // store.window) not in fires for d, s in contrast)  # silent for the latent
    (default,) = explain_latents(tiny_llm, store, SET, [latent], sampling, ExplainConfig())
    assert default["explainer"] == "default" and len(json.loads(default["shown"])) == 6
    # the prompt: counter-examples after the highlighted examples, and the task says what they are
    windows = [store.window_example(d, (s - 1) // store.window) for d, s in contrast]
    msgs = explainer_messages(examples, contrast=windows)
    assert "counter-examples" in msgs[0]["content"] and "Counter-example 10:" in msgs[-1]["content"]
    assert "Counter-example" not in explainer_messages(examples)[-1]["content"]
    # scoring never tests on a window the explainer was shown, silent ones included
    act, neg = scoring_examples(store, SET, latent, sampling, exclude=shown)
    assert len(neg) == 10 and not {(e.doc_id, e.start) for e in neg + act} & set(shown)


def test_silent_windows_excluded_from_a_test_set_are_replaced(store):
    latent = _sparse_latent(store)
    cfg = SamplingConfig(test_per_quantile=1, n_negative=8)
    _, before = scoring_examples(store, SET, latent, cfg)
    seen = [(e.doc_id, e.start) for e in before[:3]]
    _, after = scoring_examples(store, SET, latent, cfg, exclude=seen)
    assert len(after) == 8 and not {(e.doc_id, e.start) for e in after} & set(seen)
    # excluding activating windows only leaves the silent half as it was
    act, _ = scoring_examples(store, SET, latent, cfg)
    _, same = scoring_examples(store, SET, latent, cfg, exclude=[(e.doc_id, e.start) for e in act[:2]])
    assert [(e.doc_id, e.start) for e in same] == [(e.doc_id, e.start) for e in before]


def test_unknown_explainer_is_a_one_line_error():
    with pytest.raises(AutointerpError, match="unknown explainer 'smart': use default or contrastive"):
        ExplainConfig(explainer="smart")
