"""Every launched job: state, progress, elapsed and ETA, log tail, cancel. Jobs are subprocesses
of the pipeline, so they outlive page reloads; this page refreshes itself while any is running."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

from autointerp import jobs

from autointerp.app import ui  # noqa: E402

st.set_page_config(page_title="Jobs · autointerp", layout="wide")
st.title("Jobs")
ICONS = {"running": "⏳", "done": "✅", "failed": "❌", "cancelled": "⏹️"}


@st.fragment(run_every=2)
def job_list() -> None:
    all_jobs = jobs.list_jobs()
    if not all_jobs:
        st.info("No jobs yet: launch one from the Browse or Latent page.")
        return
    for job in all_jobs:
        state = job.state
        with st.container(border=True):
            head, side = st.columns([4, 1])
            head.markdown(f"{ICONS.get(state, '')} **{state}** · `{job.id}`")
            head.text(job.title)  # titles hold user-typed model names: plain text
            p = job.progress
            if p and p.get("total"):
                step = f"step {p.get('step', 1)}/{p.get('n_steps', 1)} · " if p.get("n_steps", 1) > 1 else ""
                head.progress(min(1.0, p["done"] / p["total"]),
                              text=f"{step}{p['done']}/{p['total']} {p.get('unit', '')}s")
            failures = (f" · {job.failures} failures summed over steps (recorded, see the log)"
                        if job.failures else "")
            rate = job.rate
            unit = (p or {}).get("unit", "unit")
            speed = "" if rate is None or state != "running" else (
                f" · {rate:,.0f} {unit}s/s" if rate >= 1 else f" · {rate * 3600:,.0f} {unit}s/h")
            head.caption(f"elapsed {ui.fmt_seconds(job.elapsed_s)}{speed} · ETA {ui.fmt_seconds(job.eta_s)}{failures}")
            if state == "failed" and job.error:
                head.error(job.error)
            if state == "running" and side.button("Cancel", key=f"cancel-{job.id}"):
                job.cancel()
                st.rerun(scope="fragment")
            with st.expander("Log tail"):
                st.code("\n".join(job.log_tail(30)) or "(empty)", language=None)


job_list()
