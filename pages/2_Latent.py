"""One latent: explanation(s) with all scores and failure counts, activation histogram, top and
per-quantile examples with activating tokens highlighted, scorers' per-example decisions, logit
lens of the decoder direction, and re-explain / rescore buttons."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp.app import figures, ui, views  # noqa: E402
from autointerp.core.errors import AutointerpError  # noqa: E402
from autointerp.models.logit_lens import logit_lens  # noqa: E402
from autointerp.app.render import examples_html  # noqa: E402

st.set_page_config(page_title="Latent · autointerp", layout="wide")
run, store = ui.pick_run()
hookpoint = ui.pick_set(store)
n_lat = store.n_latents(hookpoint)
latent = int(st.sidebar.number_input("Latent", min_value=0, max_value=n_lat - 1,
                                     value=min(max(ui.current_latent(), 0), n_lat - 1)))
st.query_params["latent"] = str(latent)
st.session_state["ai_latent"] = str(latent)

data = views.latent_page(store, hookpoint, latent)
s = data.stats
st.title(f"{hookpoint} · latent {latent}")
c = st.columns(4)
c[0].metric("Frequency", f"{s['frequency']:.5f}")
c[1].metric("Activations", f"{int(s['count']):,}")
c[2].metric("Max activation", f"{s['max_act']:.3f}")
c[3].metric("Mean activation", f"{s['mean_act']:.3f}")

st.subheader("Explanation")
has_output = len(data.output_explanations) > 0
expl_col, out_col = st.columns(2) if has_output else (st.container(), None)
with expl_col:
    if has_output:
        st.markdown("**Input** (when it fires)")
    if data.explanations.empty:
        st.info("Not explained yet: launch a job below.")
    else:
        newest = data.explanations.iloc[0]
        good = data.explanations[data.explanations.explanation.notna()]
        if len(good):
            row = good.iloc[0]
            st.text(row.explanation)  # plain text: LLM output is never rendered as markdown or HTML
            st.caption(views.explanation_caption(row))
        if newest.explanation is None:
            st.warning(f"The newest explanation attempt failed: {newest.error}"
                       + (". Shown: the last good explanation and its scores." if len(good) else ""))
            st.caption("Raw answer:")
            st.text(newest.raw or "")
if has_output:
    with out_col:
        st.markdown("**Output** (what steering it does)")
        out = data.output_explanations.iloc[0]
        if out.explanation is None:
            st.warning(f"The latest output explanation failed: {out.error}")
            st.text(out.raw or "")
        else:
            st.text(out.explanation)
            st.caption(f"by {out.model}, {out.strategy}, {out.created_at}")
if len(data.explanations) > 1:
    with st.expander(f"Earlier explanations ({len(data.explanations) - 1})"):
        st.dataframe(data.explanations.reindex(columns=["created_at", "explanation", "error", "model", "engine",
                                                         "strategy", "explainer"]).iloc[1:],
                     hide_index=True, width="stretch")

if len(data.scores):
    st.subheader("Scores")
    status = views.validity_status(store, hookpoint)
    shown = views.latent_scores_table(data.scores, status)
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.3f")
                                for k in ("auroc", "balanced_accuracy", "f1", "correlation")})
    st.caption("Failures are malformed LLM answers: counted next to each score, never folded into it. "
               + views.VALIDITY_HELP)

steering, continuations = views.intervention_view(store, hookpoint, latent)
if len(steering):
    st.subheader("Intervention (steering)")
    st.caption("The latent's unit decoder direction added with strength α so the next-token KL hits each "
               "target; score = mean log P(explanation | steered) − log P(explanation | clean) in nats, beside "
               "a random explanation on the same steering and the explanation on a random direction.")
    st.dataframe(steering, hide_index=True, width="stretch")
    if len(continuations):
        with st.expander(f"Clean vs steered continuations ({len(continuations)})"):
            st.dataframe(continuations, hide_index=True, width="stretch")  # model text: plain cells, never HTML

st.subheader("Steer")
st.caption("Add the latent's unit decoder direction × α at every position (or the α whose next-token KL hits a "
           "target) and compare greedy continuations of your prompt. The subject model loads on first use.")
ui.steer_panel(store, hookpoint, latent)

left, right = st.columns([1, 1])
with left:
    st.subheader("Activation histogram")
    fig = figures.activation_histogram(data.histogram, title=f"{hookpoint} latent {latent}: activations")
    st.plotly_chart(fig, width="stretch", key="hist")
    ui.figure_downloads(fig, f"{run['name']}-{hookpoint}-{latent}-histogram", key="dl-hist")
with right:
    st.subheader("Logit lens")
    st.caption("Output tokens the decoder direction promotes / suppresses most (final norm gain × unembedding).")
    try:
        with st.spinner("Loading the subject model's unembedding…"):
            lens = logit_lens(store.info, hookpoint, latent)
        a, b = st.columns(2)
        a.dataframe({"promoted": [t for t, _ in lens.top], "logit": [v for _, v in lens.top]}, hide_index=True)
        b.dataframe({"suppressed": [t for t, _ in lens.bottom], "logit": [v for _, v in lens.bottom]},
                    hide_index=True)
    except AutointerpError as e:
        st.info(str(e))

tab_top, tab_q, tab_dec = st.tabs(["Top examples", "Examples per quantile", "Scorer decisions"])
with tab_top:
    if data.top:
        st.caption("Colour ∝ activation (shared scale); hover a token for its value.")
        st.html(examples_html(data.top))
    else:
        st.write("This latent never fired on the cached tokens.")
with tab_q:
    scale = max((e.max_act for e in data.quantiles), default=1.0)
    for q in sorted({e.quantile for e in data.quantiles}, reverse=True):
        st.markdown(f"**Quantile {q}** of {max(e.quantile for e in data.quantiles)} (by window max activation)")
        st.html(examples_html([e for e in data.quantiles if e.quantile == q], scale=scale))
with tab_dec:
    if data.scores.empty:
        st.write("No scores yet.")
    else:
        pick = st.selectbox("Scorer", data.scores.scorer.tolist())
        sid = data.scores[data.scores.scorer == pick].score_id.iloc[0]
        dec = views.decisions_view(store, sid)
        if dec.empty:
            st.write("This score stored no per-example decisions.")
        else:
            counts = dec.outcome.value_counts()
            st.caption(", ".join(f"{int(counts.get(k, 0))} {k}" for k in ("right", "wrong", "failed", "n/a")
                                 if k != "n/a" or counts.get(k)))
            st.dataframe(dec, hide_index=True, width="stretch",
                         column_config={"shown": st.column_config.TextColumn("text shown to the scorer", width="large"),
                                        "probability": st.column_config.NumberColumn(format="%.3f")})
            ui.table_download(dec, f"{run['name']}-{hookpoint}-{latent}-{pick}-decisions", key="dl-dec")

st.subheader("Re-explain / rescore this latent")
ui.job_form(run["name"], hookpoint, [latent], key="latent-job", store=store)
