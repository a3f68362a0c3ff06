"""The paper's analyses (`autointerp analyze`): each study end to end on a small real run with the
real SmolLM2 as explainer/scorer, the Hungarian match against brute force, CIs, figures, export,
the Analyses page in AppTest, and the one-line errors for data a study cannot use."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path


import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from autointerp import cli
from autointerp.analysis import agreement, overlap
from autointerp.app.report import REPORTS
from autointerp.analysis.stats import median_ci, t_ci, welch_ci
from autointerp.config import AnalyzeConfig
from autointerp.core.errors import AutointerpError
from autointerp.store import RunStore, append_results
from autointerp.runs.studies import run_study
from fixture_rows import explain_as_scored

ROOT = Path(__file__).resolve().parents[2]
SAE = "resid_post.2"
RANDOM_A, RANDOM_B = "resid_post.1-random", "resid_post.2-random"  # same seed: identical directions
TOPK, NEURONS = "mlp_neurons.1-topk4", "mlp_neurons.1-neurons"
SMALL = dict(n_explain=6, test_per_quantile=1, n_negative=6, per_prompt=5, scorers=["detection", "embedding"],
             model="smollm2", batch_size=8, chunk=4)


@pytest.fixture(scope="module")
def analysis_run(tmp_path_factory, tiny_subject, tiny_sae_dir) -> Path:
    """The tiny model over 2,560 tokens of the real corpus, coded five ways: an SAE, random
    directions at two adjacent layers (one seed, so one set of directions), raw neurons (positive
    part above 0.05) and top-k neurons of one MLP."""
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig

    run = tmp_path_factory.mktemp("analysis-data") / "runs" / "analysis"
    cache_run(CacheConfig(run=str(run), model=tiny_subject.name, tokens=64 * 40, part_contexts=16, batch_contexts=8,
                          coders=[f"sae:{tiny_sae_dir}", "random:64:4@resid_post.1", "random:64:4@resid_post.2",
                                  "neurons:0.05@mlp_neurons.1", "topk:4@mlp_neurons.1"], coder_dtype="float32"),
              subject=tiny_subject)
    return run


@pytest.fixture
def run(analysis_run, fresh_copy) -> Path:
    return fresh_copy(analysis_run, "analysis")


@pytest.fixture(scope="module")
def smol():
    from autointerp.llm.base import LLMConfig
    from autointerp.llm.transformers_backend import TransformersClient

    return TransformersClient(LLMConfig(model="smollm2", batch_size=8))


def cfg(run: Path, **kw) -> AnalyzeConfig:
    return AnalyzeConfig(run=str(run), **{**SMALL, "random": 3, **kw})


# --- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4)])
def test_hungarian_match_equals_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        sim = rng.normal(size=shape)
        rows, cols = overlap.hungarian(sim)
        k = min(shape)
        best = max(sum(sim[i, j] for i, j in zip(r, c))
                   for r in itertools.combinations(range(shape[0]), k)
                   for c in itertools.permutations(range(shape[1]), k))
        assert len(set(rows)) == len(set(cols)) == k
        assert sim[rows, cols].sum() == pytest.approx(best, abs=1e-12)


def test_intervals_need_three_values_and_cover_the_truth():
    assert np.isnan(t_ci([1.0, 2.0])[1]) and np.isnan(median_ci([1.0, 2.0])[2])
    assert np.isnan(median_ci(np.arange(5.0))[1]) and median_ci(np.arange(6.0))[1:] == (0.0, 5.0)
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0.7 <= hi for lo, hi in (t_ci(rng.normal(0.7, 0.1, 20))[1:] for _ in range(200)))
    assert 180 <= covered <= 200  # a 95% interval, not a decoration
    d, lo, hi = welch_ci(rng.normal(1.0, 0.1, 30), rng.normal(0.0, 0.1, 30))
    assert 0.8 < lo < d < hi < 1.2 and hi - lo < 0.25


def test_study_intervals_hold_their_level_at_small_n():
    """Issue 20 A3, the studies' side: 2,000 simulated data sets per case. The median's
    order-statistic interval and Welch's interval for two latent sets of unequal spread keep at
    least 95 % coverage (minus simulation noise) at the studies' sizes, where the percentile
    bootstraps they replace did not."""
    rng = np.random.default_rng(1)
    for n in (6, 10, 20):
        skewed = rng.exponential(1.0, (2000, n))  # median log 2
        cover = np.mean([(lo <= np.log(2) <= hi) for lo, hi in (median_ci(x)[1:] for x in skewed)])
        assert cover >= 0.94, (n, cover)
    for n_a, n_b in ((3, 3), (5, 12), (10, 10), (20, 6)):
        cover = np.mean([lo <= 0.1 <= hi for lo, hi in (
            welch_ci(rng.normal(0.1, 0.3, n_a), rng.normal(0.0, 0.05, n_b))[1:] for _ in range(2000))])
        assert cover >= 0.935, (n_a, n_b, cover)
    rho, lo, hi = agreement.rho_ci(np.arange(12.0), np.arange(12.0) + rng.normal(0, 0.5, 12))
    assert -1 <= lo <= rho <= hi <= 1 and rho > 0.9


def test_agreement_ci_past_the_bootstrap_s_size_agrees_with_it_and_stays_small():
    """Above BOOT_MAX_N latents the CI is Fisher's z (Bonett-Wright): at the switch it matches the
    bootstrap's within a tenth of its width, it covers the true rho, and a million latents take no
    n_boot x n matrix (issue 25)."""
    rng = np.random.default_rng(3)
    n = agreement.BOOT_MAX_N
    x = rng.normal(size=n + 1)
    y = 0.6 * x + rng.normal(size=n + 1)
    _, b_lo, b_hi = agreement.rho_ci(x[:n], y[:n])  # the bootstrap (n = BOOT_MAX_N)
    _, f_lo, f_hi = agreement.rho_ci(x, y)  # Fisher's z (one latent more)
    assert abs((f_hi - f_lo) - (b_hi - b_lo)) < 0.1 * (b_hi - b_lo)
    assert abs(f_lo - b_lo) < 0.01 and abs(f_hi - b_hi) < 0.01
    truth = 6 / np.pi * np.arcsin(0.6 / np.sqrt(1.36) / 2)  # Spearman's rho of this bivariate normal
    cover = 0
    for _ in range(300):
        a = rng.normal(size=5000)
        _, lo, hi = agreement.rho_ci(a, 0.6 * a + rng.normal(size=5000))
        cover += lo <= truth <= hi
    assert cover / 300 >= 0.92
    big = rng.normal(size=1_000_000)
    rho, lo, hi = agreement.rho_ci(big, big + rng.normal(size=1_000_000))
    assert lo < rho < hi and hi - lo < 0.01


# --- overlap -------------------------------------------------------------------------------------


def test_overlap_of_decoders_finds_identical_directions_and_beats_the_shuffled_baseline(run):
    table = run_study("overlap", cfg(run, basis=["decoder"]))
    assert overlap.adjacent_pairs(RunStore(run)) == [(RANDOM_A, RANDOM_B)]
    (row,) = table.itertuples()
    assert (row.family, row.pair, row.basis, row.n) == ("resid_post random", f"{RANDOM_A} → {RANDOM_B}", "decoder", 64)
    assert row.matched_mean == pytest.approx(1.0, abs=1e-5)  # the same seed gives the same directions
    assert row.baseline_hi < 0.6 and abs(row.random_pair_mean) < 0.2
    pairs = RunStore(run).study_results("overlap_pairs")
    assert len(pairs) == 64 and (pairs.latent_a == pairs.latent_b).all()


def test_overlap_refuses_sets_of_different_widths_and_malformed_pairs(run):
    with pytest.raises(AutointerpError, match="different widths") as e:
        run_study("overlap", cfg(run, basis=["decoder"], pairs=[f"{SAE}:{TOPK}"]))
    assert "\n" not in str(e.value)
    with pytest.raises(AutointerpError, match="is not A:B"):
        run_study("overlap", cfg(run, pairs=[SAE]))
    with pytest.raises(AutointerpError, match="no latent sets"):
        run_study("overlap", cfg(run, pairs=[f"{SAE}:resid_post.3"]))


@pytest.mark.slow
def test_overlap_of_explanations_explains_partners_and_matches_them(run, smol):
    table = run_study("overlap", cfg(run, basis=["decoder", "explanation"]), client=smol)
    assert list(table.basis) == ["decoder", "explanation", "partner explanation"]
    store = RunStore(run)
    expl = store.explanations()
    assert set(expl.hookpoint) == {RANDOM_A, RANDOM_B}  # sampled latents of A and their decoder partners in B
    assert sorted(expl[expl.hookpoint == RANDOM_A].latent) == sorted(expl[expl.hookpoint == RANDOM_B].latent)
    row = table[table.basis == "explanation"].iloc[0]
    assert row.n == 3 and 0 <= row.recovered <= 1 and row.matched_mean >= row.random_pair_mean - 1e-9
    pairs = store.study_results("overlap_pairs")
    assert (pairs.basis == "explanation").sum() == 3 and pairs.explanation_a.notna().sum() == 3
    # a second study reuses the stored explanations: nothing new to explain, no model needed
    again = run_study("overlap", cfg(run, basis=["explanation"]), client=None)
    assert len(store.explanations()) == len(expl) and list(again.basis) == ["explanation", "partner explanation"]


# --- sampling and coders -----------------------------------------------------------------------


@pytest.mark.slow
def test_sampling_study_scores_every_strategy_on_one_test_set(run, smol):
    summary = run_study("sampling", cfg(run, hookpoint=SAE, scorer="embedding"), client=smol)
    store = RunStore(run)
    expl = store.study_results("study_explanations", "sampling")
    assert len(expl) == 3 * 4 and set(expl.condition) == {"top", "random", "quantiles", "mix"}
    assert (expl.condition == expl.strategy).all()
    assert store.explanations().empty  # a study never replaces a latent's current explanation
    scores = store.study_results("study_scores", "sampling")
    assert set(scores.scorer) == {"detection", "embedding"}
    for (_, scorer), g in scores.groupby(["latent", "scorer"]):
        assert g.n.nunique() == 1  # one test set per latent, whatever the strategy
    assert list(summary.condition) == ["top", "random", "quantiles", "mix"]
    assert {"n", "n_failed", "mean_lo", "mean_hi", "median", "diff", "diff_lo", "n_paired"} <= set(summary)
    report = REPORTS["sampling"](store, "detection")
    assert report.scorers == ["detection", "embedding"] and report.sections[0].figure is not None
    dec = report.sections[1].table
    assert set(dec.decile) >= {0} and (dec.n >= 1).all()


@pytest.mark.slow
def test_coders_study_compares_sets_against_the_first(run, smol):
    summary = run_study("coders", cfg(run, sets=[SAE, TOPK, RANDOM_A]), client=smol)
    assert list(summary.condition) == [SAE, TOPK, RANDOM_A]
    assert np.isnan(summary["diff"].iloc[0]) and (summary.vs == SAE).all()
    scores = RunStore(run).study_results("study_scores", "coders")
    assert scores.groupby("condition").latent.nunique().to_dict() == {SAE: 3, TOPK: 3, RANDOM_A: 3}
    for c in (TOPK, RANDOM_A):
        got = summary.set_index("condition").loc[c]
        if got.n >= 3 and (summary.n.iloc[0] >= 3):
            assert np.isfinite(got.diff_lo) and got.diff_lo <= got["diff"] <= got.diff_hi


def test_raw_neurons_keep_their_positive_part_above_the_threshold(run):
    store = RunStore(run)
    acts = store._sql(f"SELECT min(value) AS lo FROM read_parquet('{run}/acts/{NEURONS}/acts.parquet')")
    assert float(acts.lo[0]) > 0.05
    assert store.info["coders"][NEURONS]["threshold"] == 0.05


def test_studies_refuse_too_few_latents_and_unknown_choices(run):
    with pytest.raises(AutointerpError, match="at least 3"):
        run_study("sampling", cfg(run, hookpoint=SAE, random=2))
    with pytest.raises(AutointerpError, match="unknown sampling strategies"):
        run_study("sampling", cfg(run, hookpoint=SAE, strategies=["best"]))
    with pytest.raises(AutointerpError, match="context scorers only"):
        run_study("coders", cfg(run, scorers=["intervention"]))
    with pytest.raises(AutointerpError, match="at least 2 latent sets"):
        run_study("coders", cfg(run, sets=[SAE]))
    with pytest.raises(AutointerpError, match="no pair of scorers"):
        run_study("agreement", cfg(run))


# --- stored results -> tables, figures, page, export --------------------------------------------


def _fake_study(run: Path, study: str, conditions: dict[str, list[float]]) -> None:
    """study_scores rows as a study writes them (values chosen by the test)."""
    sid = uuid.uuid4().hex
    rows = [{"study_id": sid, "study": study, "condition": c, "hookpoint": SAE, "latent": i, "scorer": "detection",
             "explanation": f"{c} {i}", "value": v, "n": 16, "n_failed": 0, "model": "fixture",
             "accuracy_per_decile": json.dumps({"0": 0.8, "5": 0.5 + v / 10, "10": v})}
            for c, values in conditions.items() for i, v in enumerate(values)]
    append_results(run, "study_scores", rows)


def _fake_scores(run: Path, n: int) -> None:
    rows = []
    for i in range(n):
        for scorer, v in (("detection", 0.5 + 0.04 * i), ("fuzzing", 0.45 + 0.05 * i)):
            rows.append({"score_id": uuid.uuid4().hex, "hookpoint": SAE, "latent": i, "scorer": scorer,
                         "explanation": f"e{i}", "auroc": v, "n": 20, "n_failed": 0})
    append_results(run, "scores", rows)
    explain_as_scored(run, rows)


def test_reports_say_not_enough_data_and_agreement_carries_n_ci_and_validity(run):
    store = RunStore(run)
    assert all(REPORTS[s](store).missing for s in REPORTS)  # nothing stored yet: each says what to run
    _fake_study(run, "coders", {SAE: [0.8, 0.9, 0.85, 0.7], TOPK: [0.6, 0.55]})
    report = REPORTS["coders"](store)
    assert report.missing is None
    assert any(f"not enough data for a CI in {TOPK}" in n for n in report.sections[0].notes)
    summary = report.sections[0].table.set_index("condition")
    assert summary.loc[SAE, "n"] == 4 and np.isnan(summary.loc[TOPK, "median_lo"])
    _fake_scores(run, 8)
    append_results(run, "validity_summary", [{"validation_id": "v", "hookpoint": SAE, "scorer": "detection",
                                              "n_latents": 8, "validated": True, "verdict": "validated"}])
    table = REPORTS["agreement"](store).sections[0].table
    (row,) = table.itertuples()
    assert (row.scorer_a, row.scorer_b, row.n, row.rho) == ("detection", "fuzzing", 8, pytest.approx(1.0))
    assert (row.validated_a, row.validated_b) == ("validated", "not checked")


def test_analyses_page_renders_every_study_with_links_and_launches_a_job(run, tmp_path):
    _fake_study(run, "sampling", {"top": [0.7, 0.8, 0.75], "random": [0.6, 0.65, 0.7], "quantiles": [0.6, 0.7, 0.7],
                                  "mix": [0.7, 0.75, 0.7]})
    _fake_study(run, "coders", {SAE: [0.8, 0.9, 0.85], TOPK: [0.6, 0.55, 0.65], RANDOM_A: [0.5, 0.52, 0.49]})
    run_study("overlap", cfg(run, basis=["decoder"]))
    _fake_scores(run, 6)
    at = AppTest.from_file(str(ROOT / "pages/5_Analyses.py"), default_timeout=120)
    at.query_params["run"] = "analysis"
    at.run()
    assert not at.exception, at.exception
    headers = [h.value for h in at.header]
    assert headers == ["Sampling strategies", "SAE latents vs neurons", "Adjacent-layer overlap", "Scorer agreement"]
    subheaders = [h.value for h in at.subheader]
    assert "Sampling strategies: detection" in subheaders and "Overlap: decoder" in subheaders
    assert any(s.startswith("Matched pairs") for s in subheaders)
    pairs = next(df.value for df in at.dataframe if "open_a" in df.value.columns)
    assert pairs.open_a.iloc[0] == f"Latent?run=analysis&set={RANDOM_A}&latent={pairs.latent_a.iloc[0]}"
    assert not at.info  # every study has data to show
    # launching a study from its form starts a background job with the form's settings
    from autointerp import jobs

    submit = next(b for b in at.button if b.label == "Launch the overlap study")
    submit.click().run()
    assert not at.exception, at.exception
    assert "Launched job" in at.success[0].value
    (job,) = jobs.list_jobs()
    assert job.steps[0][:2] == ["analyze", "overlap"] and "--run" in job.steps[0]
    job.cancel()


def test_analyses_page_shows_a_random_model_baseline_against_its_trained_twin(run):
    """A coders study with a `-random-init` set: its row is compared with the same SAE on the
    trained subject (vs, diff), the others with the reference, in the report and on the page."""
    twin = f"{SAE}-random-init"
    _fake_study(run, "coders", {TOPK: [0.6, 0.55, 0.65, 0.6], SAE: [0.8, 0.9, 0.85, 0.82],
                                twin: [0.5, 0.55, 0.52, 0.5]})
    summary = REPORTS["coders"](RunStore(run)).sections[0].table.set_index("condition")
    assert summary.loc[twin, "vs"] == SAE and summary.loc[SAE, "vs"] == TOPK
    assert summary.loc[twin, "diff"] == pytest.approx(np.mean([0.5, 0.55, 0.52, 0.5]) - np.mean([0.8, 0.9, 0.85, 0.82]))
    at = AppTest.from_file(str(ROOT / "pages/5_Analyses.py"), default_timeout=120)
    at.query_params["run"] = "analysis"
    at.run()
    assert not at.exception, at.exception
    shown = next(df.value for df in at.dataframe if "vs" in df.value.columns).set_index("condition")
    assert shown.loc[twin, "vs"] == SAE


def test_analyses_page_on_an_empty_run_says_what_to_run(run):
    at = AppTest.from_file(str(ROOT / "pages/5_Analyses.py"), default_timeout=120)
    at.query_params["run"] = "analysis"
    at.run()
    assert not at.exception, at.exception
    infos = [i.value for i in at.info]
    assert len(infos) == 4 and any("autointerp analyze sampling" in i for i in infos)
    assert any("not enough data" in i for i in infos)


def test_export_writes_every_stored_analysis(run, tmp_path):
    from autointerp.config import ExportConfig
    from autointerp.app.export import export_run

    _fake_study(run, "sampling", {"top": [0.7, 0.8, 0.75], "random": [0.6, 0.65, 0.7]})
    run_study("overlap", cfg(run, basis=["decoder"]))
    written = export_run(ExportConfig(run=str(run), out=str(tmp_path / "out"), formats=["svg"], top_latents=0))
    names = {p.relative_to(tmp_path / "out").as_posix() for p in written}
    assert {"analyses/sampling_detection.csv", "analyses/sampling_detection.svg",
            "analyses/sampling_detection_deciles.svg", "analyses/overlap_decoder.csv",
            "analyses/overlap_decoder.svg"} <= names
    table = pd.read_csv(tmp_path / "out" / "analyses" / "sampling_detection.csv")
    assert list(table.condition) == ["top", "random"] and (table.n == 3).all()


def test_cli_analyze_prints_the_table_and_reports_bad_input_in_one_line(run, capsys):
    assert cli.main(["analyze", "overlap", "--run", str(run), "--basis", "decoder"]) == 0
    out = capsys.readouterr().out
    assert "resid_post random" in out and "decoder" in out
    assert cli.main(["analyze", "sampling", "--run", str(run), "--hookpoint", SAE, "--random", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "at least 3" in err and "\n" not in err
