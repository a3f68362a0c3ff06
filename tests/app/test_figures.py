"""Scorer analyses, figures, their kaleido export (real Chromium) and `autointerp export`, on a
copy of the tiny run with score and decision rows written the way `autointerp score` writes them."""

from __future__ import annotations

import json
import shutil
import uuid
import xml.etree.ElementTree as ET
from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autointerp import analysis

from autointerp.app import figures
from autointerp.cli import main
from autointerp.core.errors import AutointerpError
from autointerp.score.metrics import Decision, summarize
from autointerp.store import RunStore, append_results
from fixture_rows import explain_as_scored

N_LATENTS = 24  # scored latents 0..23; latent 24 has only a failed score
SKIP_FUZZING = {0, 5, 10, 15, 20}  # fuzzing never ran on these, so pairwise n differs per pair
NO_PROBS = 1  # latent whose detection answers were parsed text (no probabilities): no AUROC
CLASSIFIERS = ("detection", "fuzzing", "embedding")


def _score_rows(hookpoint: str, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Scores driven by a hidden per-latent quality, so scorers correlate as on real data."""
    rng = np.random.default_rng(seed)
    quality = rng.random(N_LATENTS)
    scores, decisions = [], []
    for latent in range(N_LATENTS):
        for scorer in CLASSIFIERS:
            if scorer == "fuzzing" and latent in SKIP_FUZZING:
                continue
            sid, ds = uuid.uuid4().hex, []
            for q in range(11):  # decile 0 = non-activating examples
                for _ in range(6 if q == 0 else 2):
                    act = q > 0
                    p = float(np.clip(0.5 + (quality[latent] - 0.4) * (1 if act else -1) + rng.normal(0, 0.2), 0, 1))
                    fail = scorer == "detection" and latent == 3 and q == 5
                    ds.append(Decision(act, None if fail else p >= 0.5,
                                       None if (scorer == "detection" and latent == NO_PROBS) else p, q))
            s = summarize(ds)
            scores.append({"score_id": sid, "hookpoint": hookpoint, "latent": latent, "scorer": scorer,
                           "explanation": f"latent {latent}", "model": "test", "mode": "logprob",
                           **{k: s[k] for k in ("n", "n_failed", "balanced_accuracy", "precision", "recall",
                                                "f1", "auroc", "accuracy")},
                           "accuracy_per_decile": json.dumps(s["accuracy_per_decile"]),
                           "correlation_per_quantile": "{}"})
            decisions += [{"score_id": sid, "hookpoint": hookpoint, "latent": latent, "scorer": scorer,
                           "doc_id": i, "start": 1, "activating": d.activating, "quantile": d.quantile,
                           "prediction": d.prediction, "probability": d.probability, "failed": d.failed,
                           "raw": "", "shown": ""} for i, d in enumerate(ds)]
        scores.append({"score_id": uuid.uuid4().hex, "hookpoint": hookpoint, "latent": latent,
                       "scorer": "simulation", "explanation": f"latent {latent}", "n": 40, "n_failed": 0,
                       "correlation": float(quality[latent] + rng.normal(0, 0.1)),
                       "accuracy_per_decile": "{}", "correlation_per_quantile": "{}"})
    scores.append({"score_id": uuid.uuid4().hex, "hookpoint": hookpoint, "latent": N_LATENTS, "scorer": "detection",
                   "explanation": f"latent {N_LATENTS}", "error": "only 2 activating windows (need 5)", "n": 0,
                   "n_failed": 0})
    return scores, decisions


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_run):
    """A private copy of the tiny run (the fixture is shared) with results written into it."""
    data = tmp_path_factory.mktemp("fig-data")
    run = data / "runs" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("results"))  # other tests write results into the shared run
    hp = RunStore(run).hookpoints()[0]
    scores, decisions = _score_rows(hp)
    old = pd.Timestamp("2024-01-01")  # superseded by the rows above: the latest must win
    append_results(run, "scores", [{**scores[0], "score_id": "old", "auroc": 0.0, "created_at": old}])
    append_results(run, "decisions", decisions)
    append_results(run, "scores", scores)
    explain_as_scored(run, scores + [{**scores[0], "hookpoint": RunStore(run).hookpoints()[1]}])
    # another set's score must not leak into a per-hookpoint query
    other = RunStore(run).hookpoints()[1]
    append_results(run, "scores", [{**scores[0], "score_id": "other", "hookpoint": other}])
    return data, run, hp


def test_score_table_takes_latest_headline_per_scorer(scored):
    _, run, hp = scored
    store = RunStore(run)
    table = analysis.score_table(store, hp)
    assert list(table.columns) == ["hookpoint", "latent", "detection", "fuzzing", "embedding", "simulation"]
    assert table.latent.tolist() == list(range(N_LATENTS + 1)) and set(table.hookpoint) == {hp}
    raw = store.scores(hp).set_index(["latent", "scorer"])
    assert table.loc[0, "detection"] == raw.loc[(0, "detection"), "auroc"] != 0.0  # not the old row
    assert pd.isna(raw.loc[(NO_PROBS, "detection"), "auroc"])
    assert table.loc[NO_PROBS, "detection"] == raw.loc[(NO_PROBS, "detection"), "balanced_accuracy"]
    assert table.loc[2, "simulation"] == raw.loc[(2, "simulation"), "correlation"]
    assert table.loc[table.latent.isin(SKIP_FUZZING), "fuzzing"].isna().all()
    assert table.loc[N_LATENTS, ["detection", "fuzzing", "embedding", "simulation"]].isna().all()
    assert len(analysis.score_table(store)) == N_LATENTS + 2  # every set: the other set's one latent too


def test_scorer_correlations_match_pandas_and_count_pairs(scored):
    _, run, hp = scored
    table = analysis.score_table(RunStore(run), hp)
    rho, n = analysis.scorer_correlations(table)
    assert rho.equals(rho.T) and n.equals(n.T)
    assert n.loc["detection", "detection"] == N_LATENTS
    assert n.loc["detection", "fuzzing"] == N_LATENTS - len(SKIP_FUZZING)
    assert n.loc["embedding", "simulation"] == N_LATENTS
    expected = table[analysis.scorer_columns(table)].corr(method="spearman")  # pairwise-complete ranks
    np.testing.assert_allclose(rho.to_numpy(), expected.to_numpy(), atol=1e-12)
    assert rho.loc["detection", "simulation"] > 0.5  # both follow the hidden quality


def test_scorer_correlations_on_known_data():
    table = pd.DataFrame({"hookpoint": "h", "latent": range(5),
                          "a": [1, 2, 3, 4, 5], "b": [2, 1, 4, 3, 5], "c": [50, 40, 30, 20, np.nan],
                          "d": [np.nan, np.nan, np.nan, 1.0, 2.0], "e": [7.0] * 5})
    rho, n = analysis.scorer_correlations(table)
    assert rho.loc["a", "b"] == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert rho.loc["a", "c"] == pytest.approx(-1.0) and n.loc["a", "c"] == 4
    assert np.isnan(rho.loc["a", "d"]) and n.loc["a", "d"] == 2  # too few shared latents
    assert np.isnan(rho.loc["a", "e"]) and n.loc["a", "e"] == 5  # a constant scorer ranks nothing


def test_accuracy_per_decile_matches_the_decisions(scored):
    _, run, hp = scored
    store = RunStore(run)
    table = analysis.accuracy_per_decile(store, hp)
    assert list(table.index) == list(CLASSIFIERS) and list(table.columns) == list(range(11))
    # recompute from the stored per-example decisions: per latent, then the mean over latents
    per_latent = []
    for s in store.scores(hp).itertuples():
        d = store.decisions(s.score_id)
        d = d[~d.failed]
        if len(d):
            acc = (d.prediction == d.activating).groupby(d["quantile"]).mean()
            per_latent += [(s.scorer, int(q), a) for q, a in acc.items()]
    expected = pd.DataFrame(per_latent, columns=["scorer", "q", "acc"]).groupby(["scorer", "q"]).acc.mean()
    for (scorer, q), value in expected.items():
        assert table.loc[scorer, q] == pytest.approx(value)


def _check_file(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    if fmt == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(BytesIO(data)).size == size
    elif fmt == "svg":
        assert ET.fromstring(data).tag.endswith("svg")
    else:
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]


def test_figures_export_as_png_svg_pdf(scored):
    _, run, hp = scored
    store = RunStore(run)
    table = analysis.score_table(store, hp)
    rho, n = analysis.scorer_correlations(table)
    heat = figures.correlation_heatmap(rho, n)
    assert f"n={N_LATENTS - len(SKIP_FUZZING)}" in heat.data[0].text[0][1]
    latent = int(store.latent_table(hp, limit=1)[0].latent[0])
    hist = analysis.histogram_table(store, hp, latent)
    assert hist["count"].sum() == store.latent_stats(hp, latent)["count"]
    figs = {"heatmap": heat, "scores": figures.score_distributions(table),
            "deciles": figures.decile_accuracy(analysis.accuracy_per_decile(store, hp)),
            "histogram": figures.activation_histogram(hist, title=f"{hp} latent {latent}")}
    boxes = [t for t in figs["scores"].data if t.type == "box"]
    assert [t.name.split(" ")[0] for t in boxes] == ["detection", "fuzzing", "embedding", "simulation"]
    # a scorer whose chance is not AUROC's 0.5 has its own chance mark on its box (simulation: r = 0)
    marks = [t for t in figs["scores"].data if t.type == "scatter"]
    assert [(t.x[0].split(" ")[0], t.y[0]) for t in marks] == [("simulation", 0.0)]
    for fmt in figures.FORMATS:
        _check_file(figures.figure_bytes(figs["heatmap"], fmt, width=640, height=480), fmt, (640, 480))
    for fig in figs.values():
        _check_file(figures.figure_bytes(fig, "png", scale=2), "png", (2 * figures.WIDTH, 2 * figures.HEIGHT))
    with pytest.raises(AutointerpError, match="use one of png"):
        figures.figure_bytes(heat, "gif")


def test_export_command_writes_figures_and_tables(scored, tmp_path, monkeypatch, capsys):
    data, run, hp = scored
    monkeypatch.setenv("AUTOINTERP_DATA", str(data))
    assert main(["export", "--run", "tiny", "--hookpoint", hp, "--top-latents", "1"]) == 0
    out = data / "exports" / "tiny"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    # the run-level analyses go to analyses/: here scorer agreement (the run has no studies yet)
    assert {f"analyses/scorer_agreement.{ext}" for ext in ("csv", "png", "svg", "pdf")} <= names
    for stem in ("score_distributions", "scorer_correlations", "accuracy_per_decile"):
        assert {f"{stem}.png", f"{stem}.svg", f"{stem}.pdf"} <= names
    intervals = pd.read_csv(out / "score_intervals.csv")  # every score with its n and 95 % interval columns
    assert {"latent", "scorer", "value", "lo", "hi", "n", "includes_chance"} <= set(intervals.columns)
    assert {"scores.csv", "score_intervals.csv", "scorer_correlations_rho.csv", "scorer_correlations_n.csv", "accuracy_per_decile.csv",
            f"latents_{hp}.csv"} <= names
    assert len([x for x in names if x.startswith("histogram_")]) == 4  # csv + 3 formats for one latent
    _check_file((out / "scorer_correlations.pdf").read_bytes(), "pdf", (0, 0))
    n = pd.read_csv(out / "scorer_correlations_n.csv", index_col=0)
    assert n.loc["detection", "fuzzing"] == N_LATENTS - len(SKIP_FUZZING)
    assert len(pd.read_csv(out / f"latents_{hp}.csv")) == RunStore(run).n_latents(hp)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"{len(names)} files written to {out}"

    # a run with nothing scored yet: only the latent tables and histograms
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("results"))
    assert main(["export", "--run", str(bare), "--out", str(tmp_path / "x"), "--formats", "svg",
                 "--top-latents", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "x").iterdir())
    hps = RunStore(bare).hookpoints()
    assert [x for x in names if not x.startswith("histogram_")] == [f"latents_{h}.csv" for h in hps]
    assert len(names) == 3 * len(hps)


def test_missing_chromium_is_a_one_line_error(scored, tmp_path, monkeypatch, capsys):
    _, run, _ = scored
    figures.close_renderer()  # a running browser would still render
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(AutointerpError) as e:
        figures.figure_bytes(figures.decile_accuracy(pd.DataFrame({1: [0.5]}, index=["detection"])), "png")
    assert "apt-get install chromium" in str(e.value) and "\n" not in str(e.value)
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "BROWSER_PATH" in err[0]
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_a_million_latent_score_table_draws_boxes_from_quartiles():
    """Issue 25: above MAX_BOX_POINTS latents a scorer's box is computed here (quartiles, fences,
    mean) and carries no points, so the figure stays small; below it every latent is a point."""
    rng = np.random.default_rng(0)
    n = 1_048_576
    table = pd.DataFrame({"hookpoint": "h", "latent": np.arange(n), "detection": rng.beta(5, 2, n),
                          "fuzzing": np.where(rng.random(n) < 0.1, np.nan, rng.beta(4, 3, n))})
    fig = figures.score_distributions(table)
    assert len(fig.to_json()) < 20_000  # every point would be tens of MB
    box = fig.data[0]
    assert box.name == "detection (n=1,048,576)" and box.boxpoints is False and box.y is None
    q1, med, q3 = np.quantile(table.detection, [0.25, 0.5, 0.75])
    assert (box.q1[0], box.median[0], box.q3[0]) == pytest.approx((q1, med, q3))
    assert box.upperfence[0] == pytest.approx(table.detection.max())  # nothing above q3 + 1.5 IQR here
    assert box.lowerfence[0] >= q1 - 1.5 * (q3 - q1) and box.lowerfence[0] > table.detection.min()
    assert fig.data[1].name == f"fuzzing (n={table.fuzzing.notna().sum():,})"
    small = figures.score_distributions(table.head(100))
    assert small.data[0].boxpoints == "all" and len(small.data[0].y) == 100
