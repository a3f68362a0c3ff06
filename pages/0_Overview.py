"""Overview page: runs, subject model, coders, tokens cached, how many latents are
explained and scored, score summaries. Layout only; data comes from autointerp."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp.app import ui, views  # noqa: E402


st.set_page_config(page_title="autointerp", layout="wide")
st.title("autointerp")
st.caption("Automatically interpreted sparse-autoencoder latents: browse, read explanations and their scores, "
           "launch re-explanation and rescoring.")

run, store = ui.pick_run()
info = store.info  # what the store reads: a grown run is read again (RunStore.refresh)
cols = st.columns(5)
cols[0].metric("Subject model", info.get("model", "?"))
cols[1].metric("Dtype", views.run_dtype(info), help="what --dtype (and --coder-dtype) resolved to when this run "
               "was cached; auto is measured per machine (bfloat16 only where it runs faster than float32)")
cols[2].metric("Tokens cached", f"{info.get('n_tokens', 0):,}", help="tokens every latent set covers (browsable)")
cols[3].metric("Latent sets", len(store.hookpoints()))
cols[4].metric("Status", info.get("status", "?"))
if (growth := views.growth_text(info)) is not None:
    st.info(growth, icon="⏳")
ui.running_jobs(ui.list_runs())
st.caption(f"Corpus: {run.get('corpus', '?')}, contexts of {run.get('ctx_len', '?')} tokens; "
           f"created {run.get('created', '?')}")

if not store.hookpoints():
    st.stop()

st.subheader("Latent sets")
summary = views.set_summary(store)
st.dataframe(summary, hide_index=True, width="stretch")
ui.table_download(summary, f"{run['name']}-latent-sets", key="dl-sets")
explained, scored = int(summary.explained.sum()), int(summary.scored.sum())
total = int(summary.latents.sum())
st.write(f"**{explained:,}** of {total:,} latents explained, **{scored:,}** scored.")
if scored == 0:
    st.info("No scores yet. `autointerp demo` starts explaining and scoring a default set of latents in the "
            "background (see Jobs); or select latents on the Browse page and launch a job.")
measured, validity_text = views.validity_summary_text(store)
(st.info if measured else st.warning)(validity_text, icon="🔬" if measured else "⚠️")
engines = store.engines()
if len(engines):
    st.subheader("Explained and scored by")
    st.caption("Each result records the model and the engine (backend, dtype, device) that computed it: results "
               "from different engines can differ, so compare like with like.")
    st.dataframe(engines, hide_index=True, width="stretch")
