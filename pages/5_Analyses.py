"""The paper's analyses on this run: sampling strategies, SAE latents vs neurons, adjacent-layer
overlap and scorer agreement. Each section launches its study as a job and shows the stored
result: figure, table with n and CIs, downloads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp.app import ui  # noqa: E402
from autointerp.app.report import REPORTS  # noqa: E402

st.set_page_config(page_title="Analyses · autointerp", layout="wide")
run, store = ui.pick_run()
st.title("Analyses")
st.caption("The comparisons of Paulo et al. (2024) on this run. Every number carries its n and a 95% CI; "
           "scores mean something only where the Scores page says the scorer is validated.")

CLAIMS = {
    "sampling": ("Sampling strategies", "Paper (Fig. 3): explanations from top examples only describe the strongest "
                 "activations; sampling across quantiles generalises better to weaker deciles."),
    "coders": ("SAE latents vs neurons", "Paper: SAE latents are much more interpretable than neurons, even top-k "
               "sparsified ones; random directions set the floor."),
    "overlap": ("Adjacent-layer overlap", "Paper: SAEs at nearby residual-stream layers learn highly similar "
                "features, more so than MLP SAEs."),
    "agreement": ("Scorer agreement", "Paper (Table 1): scorers correlate to different degrees; detection and "
                  "fuzzing agree most."),
}
@st.cache_data(show_spinner=False, max_entries=16)
def study_report(path: str, study: str, scorer: str | None, version: tuple):
    """A study's report, once per results version (scorer agreement over a million latents: ~2 s)."""
    return REPORTS[study](ui.open_store(path), scorer)


for study in REPORTS:
    title, claim = CLAIMS[study]
    st.header(title)
    st.caption(claim)
    report = study_report(run["path"], study, st.session_state.get(f"{study}-scorer"), store.version())
    if report.scorers and len(report.scorers) > 1:
        st.selectbox("Score compared", report.scorers, key=f"{study}-scorer")
    if report.missing:
        st.info(report.missing)
    for i, section in enumerate(report.sections):
        st.subheader(section.title)
        for note in section.notes:
            st.warning(note)
        name = f"{run['name']}-{section.name}"
        if section.figure is not None:
            ui.figure_with_table(section.figure, section.table, name, key=f"{study}-{i}")
        else:
            ui.table_download(section.table, name, key=f"{study}-{i}-csv")
        st.dataframe(section.table, hide_index=True, width="stretch")
    if study == "overlap" and report.sections:
        pairs = store.study_results("overlap_pairs", study_id=report.study_id)
        shown = pairs[pairs.basis == "explanation"] if (pairs.basis == "explanation").any() else pairs.head(200)
        st.subheader("Matched pairs" + (" (explanation match)" if (pairs.basis == "explanation").any()
                                        else " (first 200 of the decoder match)"))
        st.dataframe(shown.assign(
            open_a=[ui.latent_url(run["name"], s, x) for s, x in zip(shown.set_a, shown.latent_a)],
            open_b=[ui.latent_url(run["name"], s, x) for s, x in zip(shown.set_b, shown.latent_b)],
        )[["set_a", "latent_a", "open_a", "set_b", "latent_b", "open_b", "similarity", "decoder_partner",
           "explanation_a", "explanation_b"]], hide_index=True, width="stretch",
            column_config={"open_a": st.column_config.LinkColumn("latent A", display_text="open A"),
                           "open_b": st.column_config.LinkColumn("latent B", display_text="open B"),
                           "similarity": st.column_config.NumberColumn(format="%.3f")})
    if study != "agreement":
        with st.expander(f"Launch a {title.lower()} study"):
            ui.study_form(store, run["name"], study, key=f"form-{study}")
