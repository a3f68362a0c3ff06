"""Each study's stored results as the sections the Analyses page shows and `autointerp export`
writes: a table (with n and CIs), a figure, and what to do when there is not enough data yet.
Everything is read from results/, nothing is recomputed with a model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from autointerp.app import figures
from autointerp.analysis import agreement, coders, overlap, sampling
from autointerp.analysis.conditions import decile_table
from autointerp.analysis.stats import MIN_N


@dataclass
class Section:
    name: str  # file stem on export
    title: str
    table: pd.DataFrame
    figure: go.Figure | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class StudyReport:
    study: str
    sections: list[Section]
    missing: str | None = None  # why there is nothing (or not enough) to show yet
    study_id: str | None = None
    scorers: list[str] = field(default_factory=list)


def _too_few(summary: pd.DataFrame) -> str | None:
    thin = summary[summary.n < MIN_N].condition.tolist() if len(summary) else []
    return (f"not enough data for a CI in {', '.join(map(str, thin))}: fewer than {MIN_N} scored latents "
            f"(explanations or scores failed, or the study is still running)") if thin else None


def _conditions_report(store, study: str, scorer: str | None, summarize, what: str) -> StudyReport:
    scores = store.study_results("study_scores", study)
    if scores.empty:
        return StudyReport(study, [], f"no {study} study on this run yet: launch one (`autointerp analyze {study}`)")
    explanations = store.study_results("study_explanations", study_id=scores.study_id.iloc[0])
    scorers = list(dict.fromkeys(scores.scorer))
    scorer = scorer if scorer in scorers else scorers[0]
    summary = summarize(scores, scorer, explanations)
    dec = decile_table(scores, scorer)
    model = scores.model.dropna().iloc[0] if scores.model.notna().any() else "?"
    sections = [Section(f"{study}_{scorer}", f"{what}: {scorer}", summary,
                        figures.condition_scores(scores, summary, scorer, f"{what} ({model})")),
                Section(f"{study}_{scorer}_deciles", f"Accuracy per activation decile: {scorer}", dec,
                        figures.condition_deciles(dec, scorer, f"{what}: accuracy per decile") if len(dec) else None)]
    note = _too_few(summary)
    if note:
        sections[0].notes.append(note)
    return StudyReport(study, sections, None, str(scores.study_id.iloc[0]), scorers)


def sampling_report(store, scorer: str | None = None) -> StudyReport:
    return _conditions_report(store, "sampling", scorer, sampling.strategy_summary, "Sampling strategies")


def coders_report(store, scorer: str | None = None) -> StudyReport:
    return _conditions_report(store, "coders", scorer,
                              lambda s, sc, e: coders.coder_summary(s, sc, None, e), "SAE latents vs neurons")


def overlap_report(store, scorer: str | None = None) -> StudyReport:
    summary = store.study_results("overlap_summary")
    if summary.empty:
        return StudyReport("overlap", [], "no overlap study on this run yet: launch one (`autointerp analyze overlap`)")
    table = overlap.overlap_table(summary)
    sections = [Section(f"overlap_{basis.replace(' ', '_')}", f"Overlap: {basis}", table[table.basis == basis],
                        figures.overlap_bars(table, basis)) for basis in dict.fromkeys(table.basis)]
    return StudyReport("overlap", sections, None, str(summary.study_id.iloc[0]))


def agreement_report(store, scorer: str | None = None) -> StudyReport:
    table = agreement.agreement_table(store)
    if table.empty:
        return StudyReport("agreement", [], f"not enough data: no two scorers share {MIN_N}+ scored latents yet")
    title = f"Scorer agreement (Spearman; bootstrap CI, Fisher z above {agreement.BOOT_MAX_N:,} latents)"
    return StudyReport("agreement", [Section("scorer_agreement", title, table, figures.agreement_intervals(table))])


REPORTS = {"sampling": sampling_report, "coders": coders_report, "overlap": overlap_report,
           "agreement": agreement_report}
