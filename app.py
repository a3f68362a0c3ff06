"""autointerp app: browse a run's latent sets and latents. Layout only; data comes from autointerp."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp.errors import AutointerpError  # noqa: E402
from autointerp.render import examples_html  # noqa: E402
from autointerp.store import RunStore, list_runs  # noqa: E402

st.set_page_config(page_title="autointerp", layout="wide")
st.title("autointerp")


@st.cache_resource
def open_store(path: str) -> RunStore:
    return RunStore(path)


runs = list_runs()
if not runs:
    st.info("No runs yet. Build the demo with `make app` (or `autointerp demo`).")
    st.stop()

run = st.sidebar.selectbox("Run", runs, format_func=lambda r: f"{r['name']} ({r.get('status', '?')})")
try:
    store = open_store(run["path"])
    store.refresh()
except AutointerpError as e:
    st.error(str(e))
    st.stop()

cols = st.columns(4)
cols[0].metric("Subject model", run.get("model", "?"))
cols[1].metric("Tokens cached", f"{run.get('n_tokens', 0):,}")
cols[2].metric("Latent sets", len(store.hookpoints()))
cols[3].metric("Status", run.get("status", "?"))

if not store.hookpoints():
    st.info("This run is still caching; latent sets appear here as they are finalized.")
    st.stop()

hookpoint = st.sidebar.selectbox("Hookpoint (latent set)", store.hookpoints())
coder = run.get("coders", {}).get(hookpoint, {})
st.caption(f"{hookpoint}: {coder.get('kind', '?')} coder, {coder.get('n_latents', '?')} latents, k={coder.get('k')}")

sort = st.sidebar.selectbox("Sort by", ["frequency", "max_act", "mean_act", "count", "latent"])
descending = st.sidebar.toggle("Descending", value=True)
page_size = 50
_, total = store.latent_table(hookpoint, sort=sort, limit=1)
n_pages = max(1, -(-total // page_size))
page_no = st.sidebar.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1)
table, total = store.latent_table(hookpoint, sort=sort, descending=descending, limit=page_size,
                                  offset=(page_no - 1) * page_size)
st.subheader(f"Latents ({total:,})")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"frequency": st.column_config.NumberColumn(format="%.5f"),
                            "max_act": st.column_config.NumberColumn("max activation", format="%.3f"),
                            "mean_act": st.column_config.NumberColumn("mean activation", format="%.3f")})

latent = st.number_input("Latent", min_value=0, max_value=store.n_latents(hookpoint) - 1,
                         value=int(table.latent.iloc[0]) if len(table) else 0)
stats = store.latent_stats(hookpoint, latent)
st.subheader(f"Latent {latent}: frequency {stats['frequency']:.5f}, max activation {stats['max_act']:.3f}")
expl = store.explanations(hookpoint)
expl = expl[expl.latent == latent]
if len(expl):
    row = expl.iloc[0]
    if row.explanation is None:
        st.warning(f"Explanation failed ({row.error}); raw answer: {row.raw!r}")
    else:
        st.caption(f"Explanation ({row.model})")
        st.text(row.explanation)  # plain text: LLM output is never rendered as markdown or HTML
    scores = store.scores(hookpoint)
    scores = scores[scores.latent == latent]
    if len(scores):
        st.dataframe(scores[["scorer", "balanced_accuracy", "auroc", "correlation", "n", "n_failed", "model",
                             "mode"]], hide_index=True)
examples = store.top_examples(hookpoint, latent, n=10)
if examples:
    st.html(examples_html(examples))
else:
    st.write("This latent never fired on the cached tokens.")
