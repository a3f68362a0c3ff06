"""The scorer registry (config.SCORER_SPECS): every registered scorer resolves to its runner, the
numbers the app reads (headline, chance, range) come from the registration, and a new scorer is a
run function plus one registration, with no change to the score runner."""

import numpy as np
import pytest

from autointerp import config
from autointerp.analysis.scores import CHANCE, HEADLINE, SCORE_RANGE
from autointerp.config import SCORER_SPECS, InterpretConfig, ScorerSpec
from autointerp.core.errors import AutointerpError
from autointerp.runs.interpret import score_latent
from autointerp.score.metrics import Decision, summarize
from autointerp.score import ScoreContext, ScoreResult, runner

SET = "resid_post.2"


def test_every_registered_scorer_resolves_and_its_numbers_come_from_the_registration():
    assert config.SCORERS == tuple(SCORER_SPECS) and config.EXPLANATION_FREE == ("intruder",)
    for name, spec in SCORER_SPECS.items():
        assert HEADLINE[name] == spec.headline and CHANCE[name] == spec.chance
        assert SCORE_RANGE[name] == spec.score_range
        if spec.runner:
            assert callable(runner(name))
    assert CHANCE["intruder"] == pytest.approx(0.2) and HEADLINE["simulation"] == ("correlation",)
    with pytest.raises(AutointerpError, match="no per-latent runner") as e:
        runner("intervention")  # steering has its own runner (interpret.chunk_scorer)
    assert "\n" not in str(e.value)


def run_window_length(ctx: ScoreContext) -> ScoreResult:
    """A toy scorer for this test: longer windows called activating (no LLM, no explanation needed)."""
    lengths = [len(e.tokens) for e in ctx.activating + ctx.negatives]
    cut = float(np.median(lengths))
    decisions = [Decision(act, n >= cut, float(n), 0) for act, n in
                 zip([True] * len(ctx.activating) + [False] * len(ctx.negatives), lengths)]
    return ScoreResult(summarize(decisions), [], mode="toy", model="window length", engine="python")


def test_a_new_scorer_is_one_run_function_and_one_registration(store, monkeypatch):
    monkeypatch.setitem(SCORER_SPECS, "window-length", ScorerSpec("window-length", f"{__name__}:run_window_length",
                                                                  needs_llm=False))
    cfg = InterpretConfig(run=str(store.run_dir), hookpoint=SET, scorers=["window-length", "embedding"],
                          test_per_quantile=1, n_negative=6)
    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    latent = int(page.latent.iloc[0])
    scores, _ = score_latent(None, store, SET, latent, "numbers", cfg)
    toy, emb = scores
    assert (toy["scorer"], toy["mode"], toy["model"], toy["engine"]) == ("window-length", "toy", "window length",
                                                                          "python")
    assert toy["n"] == emb["n"] > 0 and toy["auroc"] is not None  # same test set as the built-in scorer
    assert emb["mode"] == "similarity"
