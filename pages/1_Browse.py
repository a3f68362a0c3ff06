"""Browse a latent set: sortable, filterable, paged table of latents with explanation and every
score; semantic search over explanations; launch explain/score on a selection; open a latent."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp import analysis

from autointerp.app import ui, views  # noqa: E402
from autointerp.config import SCORERS  # noqa: E402
from autointerp.core.errors import AutointerpError  # noqa: E402
from autointerp.app.semantic_search import ExplanationSearch  # noqa: E402

st.set_page_config(page_title="Browse · autointerp", layout="wide")
run, store = ui.pick_run()
hookpoint = ui.pick_set(store)
st.title(f"Browse {hookpoint}")


@st.cache_data(show_spinner=False, ttl=5)
def frame(path: str, hookpoint: str, version: tuple):
    return views.latent_frame(ui.open_store(path), hookpoint)


@st.cache_resource(show_spinner="Loading MiniLM…")
def searcher(path: str) -> ExplanationSearch:
    return ExplanationSearch(ui.open_store(path))


df = frame(run["path"], hookpoint, store.version())
scorers = [s for s in SCORERS if s in df.columns]

with st.sidebar:
    st.header("Filters")
    text = st.text_input("Explanation contains", key="text")
    query = st.text_input("Semantic search", key="search", help="MiniLM similarity between your words and each explanation")
    everywhere = st.toggle("Search every latent set", key="search-all",
                           help="Also list the closest explanations of the run's other latent sets")
    lo, hi = float(df.frequency.min()), float(df.frequency.max())
    freq = st.slider("Frequency (fraction of tokens)", 0.0, max(hi, 1e-6), (0.0, max(hi, 1e-6)), format="%.4f")
    explained_only = st.checkbox("Explained only", value=False)
    above = st.multiselect("95% CI above chance", scorers, key="above-chance",
                           help="Keep latents whose score's 95% interval lies wholly above chance (AUROC 0.5, r 0)")
    ranges = {}
    for s in scorers:
        full = analysis.score_range(s)
        r = st.slider(f"{s} score", *full, full, step=0.05, key=f"range-{s}")
        if r != full:
            ranges[s] = r

hits = None
if query.strip():
    sets = store.hookpoints() if everywhere else [hookpoint]
    with st.spinner("Searching (new explanations are indexed first)…"):
        try:
            found = searcher(run["path"]).search(query, sets, k=100)
        except AutointerpError as e:  # e.g. an unreadable index file: the fix is in the message
            st.error(str(e))
            st.stop()
    if everywhere:
        st.subheader(f"Closest explanations in {len(sets)} latent sets")
        st.dataframe(found, hide_index=True, width="stretch", key="search-all-sets",
                     column_config={"similarity": st.column_config.NumberColumn(format="%.3f"),
                                    "explanation": st.column_config.TextColumn(width="large")})
    hits = found[found.hookpoint == hookpoint].latent.tolist()
    st.caption(f"Semantic search: the {len(hits)} explanations of {hookpoint} among the {len(found)} closest to "
               f"{query!r}, closest first.")
f = views.BrowseFilter(text=text, min_frequency=freq[0] if freq[0] > 0 else None,
                       max_frequency=freq[1] if freq[1] < hi else None, explained_only=explained_only,
                       score_ranges=ranges, above_chance=above, latents=hits)
filtered = views.filter_latents(df, f)

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
sort_options = ["frequency", "max_act", "mean_act", "count", "latent", *scorers,
                *(f"{s} low" for s in scorers if f"{s} low" in df)]  # by the 95 % lower bound
# a search orders by relevance until the researcher picks another column
sort = (c1.selectbox("Sort by", sort_options, key="sort") if hits is None
        else c1.selectbox("Sort by", ["relevance", *sort_options], key="sort-search"))
descending = c2.toggle("Descending", value=True)
page_size = int(c3.selectbox("Rows per page", [25, 50, 100, 200], index=1))
n_pages = max(1, -(-len(filtered) // page_size))
page_no = int(c4.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="page"))
if sort == "relevance":
    page = filtered.iloc[(page_no - 1) * page_size: page_no * page_size]
else:
    page = views.page_of(filtered, sort, descending, page_no, page_size)
page = views.with_interval_text(page)

st.write(f"**{len(filtered):,}** of {len(df):,} latents match.")
columns = {"frequency": st.column_config.NumberColumn(format="%.5f"),
           "max_act": st.column_config.NumberColumn("max activation", format="%.3f"),
           "mean_act": st.column_config.NumberColumn("mean activation", format="%.3f"),
           "explanation": st.column_config.TextColumn(width="large")}
status = views.validity_status(store, hookpoint)
columns.update({s: st.column_config.NumberColumn(f"{s} {views.validity_mark(status, s).split()[0]}", format="%.3f",
                                                 help=f"{views.validity_mark(status, s)}. {views.VALIDITY_HELP}")
                for s in scorers})
columns.update({f"{s} 95% CI": st.column_config.TextColumn(help="95% interval of the score (DeLong for AUROC); "
                                                              "≈ chance: the interval holds chance")
                for s in scorers})
columns.update({f"{s} low": st.column_config.NumberColumn(format="%.3f", help="lower bound of the 95% interval")
                for s in scorers})
event = st.dataframe(page, hide_index=True, width="stretch", column_config=columns, key="latents",
                     on_select="rerun", selection_mode="multi-row")
ui.table_download(filtered, f"{run['name']}-{hookpoint}-latents", key="dl-latents", label="CSV (all matching)")
chosen = page.latent.iloc[event.selection.rows].tolist() if event.selection.rows else []

left, right = st.columns([1, 2])
with left:
    st.subheader("Open a latent")
    default = int(chosen[0]) if chosen else int(page.latent.iloc[0]) if len(page) else 0
    latent = st.number_input("Latent id", min_value=0, max_value=store.n_latents(hookpoint) - 1, value=default)
    if st.button("Open latent page", type="primary"):
        ui.open_latent(run["name"], hookpoint, int(latent))
with right:
    st.subheader(f"Explain / score the selection ({len(chosen)} selected)")
    st.caption("Select rows in the table (the checkbox column), then launch. The job runs in the background; "
               "results appear here as its parts land.")
    ui.job_form(run["name"], hookpoint, chosen, key="browse-job", store=store)
