"""autointerp app: the entry point (`streamlit run app.py`). It only names the pages; each page
lays out data that comes from the autointerp package."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

# Explicit navigation so the first page is labelled "Overview", not after this file's name.
st.navigation([st.Page("pages/0_Overview.py", title="Overview", default=True),
               st.Page("pages/1_Browse.py"), st.Page("pages/2_Latent.py"), st.Page("pages/3_Scores.py"),
               st.Page("pages/5_Analyses.py"), st.Page("pages/4_Jobs.py")]).run()
