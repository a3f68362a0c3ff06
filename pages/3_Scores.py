"""Scores across latents: distributions per scorer, Spearman correlation between scorers with n
(the paper's Table 1 on this run's data), and accuracy per activation decile."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp import analysis

from autointerp.app import figures, ui, views  # noqa: E402

st.set_page_config(page_title="Scores · autointerp", layout="wide")
run, store = ui.pick_run()
sets = store.hookpoints()
scope = st.sidebar.selectbox("Latent sets", ["all", *sets])
hookpoint = None if scope == "all" else scope
st.title("Scores" + (f" · {hookpoint}" if hookpoint else " · all latent sets"))
st.caption(analysis.HEADLINE_LABEL + ".")

st.subheader("Does each scorer measure anything?")
validity = views.validity_table(store, hookpoint)
if validity.empty:
    st.warning("No validation on this run yet: run `autointerp validate` (true vs random explanations per "
               "scorer); until then no score on this page is known to tell a good explanation from a bad one.")
else:
    st.dataframe(validity, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.3f")
                                for k in ("true", "random", "neutral", "diff", "CI low", "CI high")})
    st.caption(views.VALIDITY_HELP + " true / random / neutral: mean headline score of the latents' own, "
               "another latent's and a contentless explanation on the same test examples.")
    ui.table_download(validity, f"{run['name']}-{scope}-validity", key="dl-validity")

@st.cache_data(show_spinner="Reading every current score…", max_entries=4)
def scores_data(path: str, hookpoint: str | None, version: tuple) -> tuple:
    """The page's tables, once per results version (a million scored latents: ~2 s; reruns then reuse them)."""
    s = ui.open_store(path)
    table = analysis.score_table(s, hookpoint)
    return (table, *analysis.scorer_correlations(table), analysis.accuracy_per_decile(s, hookpoint),
            analysis.intervention_by_kl(s, hookpoint))


table, rho, n, dec, by_kl = scores_data(run["path"], hookpoint, store.version())
if table.empty:
    st.info("No scores yet: select latents on the Browse page and launch a job, or wait for the demo's job.")
    st.stop()
name = f"{run['name']}-{scope}"

st.subheader(f"Score distributions ({len(table)} latents)")
fig = figures.score_distributions(table)
st.plotly_chart(fig, width="stretch", key="dist")
ui.figure_downloads(fig, f"{name}-score-distributions", key="dl-dist")
ui.table_download(table, f"{name}-scores", key="dl-scores")

st.subheader("Spearman correlation between scorers")
if len(rho) >= 2:
    fig = figures.correlation_heatmap(rho, n)
    st.plotly_chart(fig, width="stretch", key="corr")
    ui.figure_downloads(fig, f"{name}-scorer-correlations", key="dl-corr")
    a, b = st.columns(2)
    a.caption("rho")
    a.dataframe(rho.round(3))
    b.caption("n (latents both scorers scored)")
    b.dataframe(n)
    ui.table_download(rho.reset_index(names="scorer"), f"{name}-scorer-correlations-rho", key="dl-rho",
                      label="CSV (rho)")
    ui.table_download(n.reset_index(names="scorer"), f"{name}-scorer-correlations-n", key="dl-n", label="CSV (n)")
else:
    st.write("Only one scorer has run so far.")

st.subheader("Accuracy per activation decile")
if dec.empty:
    st.write("No per-decile accuracies yet.")
else:
    fig = figures.decile_accuracy(dec)
    st.plotly_chart(fig, width="stretch", key="dec")
    ui.figure_downloads(fig, f"{name}-accuracy-per-decile", key="dl-dec")
    st.dataframe(dec.round(3))
    ui.table_download(dec.reset_index(names="scorer"), f"{name}-accuracy-per-decile", key="dl-deccsv")

pairs = analysis.intervention_vs_fuzzing(table)
if len(by_kl) or len(pairs):
    st.subheader("Intervention scores (the paper's Fig. 4)")
    st.caption("Left: mean intervention score per target KL for the latents' directions with their own and a "
               "random explanation, and for random directions with the own explanation (95% CI over latents). "
               "Right: each latent's intervention score against its fuzzing score.")
    left, right = st.columns(2)
    if len(by_kl):
        with left:
            ui.figure_with_table(figures.intervention_vs_kl(by_kl), by_kl, f"{name}-intervention-vs-kl", key="iv-kl")
    if len(pairs):
        with right:
            ui.figure_with_table(figures.intervention_vs_fuzzing(pairs), pairs, f"{name}-intervention-vs-fuzzing",
                                 key="iv-fuzz")
