"""Streamlit pieces shared by the app's pages: the run / latent-set pickers (kept in the URL so a
latent page can be linked and survives reloads), figure and table downloads, and the form that
launches explain/score jobs. Pages import these and only lay out."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from autointerp import jobs

from autointerp.app import views
from autointerp.config import SCORERS, InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.explain.explainers import EXPLAINERS
from autointerp.llm import BACKENDS
from autointerp.store import RunStore, list_runs


@st.cache_resource(show_spinner=False)
def open_store(path: str) -> RunStore:
    return RunStore(path)


def _param(name: str, default: str | None = None) -> str | None:
    return st.query_params.get(name, st.session_state.get(f"ai_{name}", default))


def _remember(name: str, value) -> None:
    st.session_state[f"ai_{name}"] = str(value)
    st.query_params[name] = str(value)


def running_jobs(runs: list[dict]) -> None:
    """Every running job's progress, redrawn every 2 s; the whole page is drawn again as soon as a
    run's published size or status changes (a run became browsable or grew), so the app picks up
    new data without a reload. Nothing is drawn (and nothing refreshes) when no job runs."""
    if not any(j.state == "running" for j in jobs.list_jobs()):
        return
    drawn = views.runs_state(runs)

    @st.fragment(run_every=2)
    def panel() -> None:
        if views.runs_state(list_runs()) != drawn:
            st.rerun(scope="app")
        running = [j for j in jobs.list_jobs() if j.state == "running"]
        for job in running:
            st.caption(f"⏳ {job.title}: {views.job_progress_text(job)} (Jobs page: log, cancel)")  # plain text
        if not running:
            st.rerun(scope="app")

    panel()


def pick_run() -> tuple[dict, RunStore]:
    """Sidebar run picker; stops the page with a hint when there is no run (showing the progress
    of a demo being built)."""
    runs = list_runs()
    if not runs:
        st.info("No runs yet. Build the demo with `make app` (or `autointerp demo`). A demo being built shows its "
                "progress here and opens as soon as its first size is cached.")
        running_jobs(runs)
        st.stop()
    names = [r["name"] for r in runs]
    wanted = _param("run", names[0])
    run = st.sidebar.selectbox("Run", runs, index=names.index(wanted) if wanted in names else 0,
                               format_func=lambda r: f"{r['name']} ({r.get('status', '?')})")
    _remember("run", run["name"])
    try:
        store = open_store(run["path"])
        store.refresh()
    except AutointerpError as e:
        st.error(str(e))
        st.stop()
    for part in store.corrupt_parts():
        st.warning(f"Skipping an unreadable result part: {part}. Move it aside (e.g. rename it to end in "
                   f"`.corrupt`); everything else in this run is shown without it.", icon="⚠️")
    return run, store


def pick_set(store: RunStore, label: str = "Latent set (hookpoint)") -> str:
    sets = store.hookpoints()
    if not sets:
        st.info("This run is still caching; latent sets appear here as they are finalized.")
        running_jobs(list_runs())
        st.stop()
    wanted = _param("set", sets[0])
    hookpoint = st.sidebar.selectbox(label, sets, index=sets.index(wanted) if wanted in sets else 0)
    _remember("set", hookpoint)
    return hookpoint


def current_latent(default: int = 0) -> int:
    try:
        return int(_param("latent", str(default)))
    except ValueError:
        return default


def open_latent(run: str, hookpoint: str, latent: int) -> None:
    """Go to the Latent page for one latent."""
    for k, v in (("run", run), ("set", hookpoint), ("latent", latent)):
        st.session_state[f"ai_{k}"] = str(v)
    st.switch_page("pages/2_Latent.py", query_params={"run": run, "set": hookpoint, "latent": str(latent)})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "figure"


def figure_downloads(fig, name: str, key: str) -> None:
    """PNG / SVG / PDF buttons; rendered only when clicked (kaleido costs ~0.2 s per format)."""
    from autointerp.app.figures import FORMATS, figure_bytes

    cols = st.columns(len(FORMATS) + 4)
    for col, fmt in zip(cols, FORMATS):
        col.download_button(fmt.upper(), data=lambda f=fmt: figure_bytes(fig, f), file_name=f"{_slug(name)}.{fmt}",
                            mime={"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}[fmt],
                            key=f"{key}-{fmt}", on_click="ignore")


def table_download(df: pd.DataFrame, name: str, key: str, label: str = "CSV") -> None:
    st.download_button(label, data=lambda: df.to_csv(index=False).encode(), file_name=f"{_slug(name)}.csv",
                       mime="text/csv", key=key, on_click="ignore")


def job_form(run: str, hookpoint: str, latents: list[int], key: str, store: RunStore | None = None) -> jobs.Job | None:
    """Backend and options for re-explaining and/or rescoring `latents`; launches a background
    job (a subprocess of the pipeline) and returns it. With the run's `store`, the cost of the
    selection, the set and the whole run is shown under the form."""
    defaults = InterpretConfig()
    with st.form(key):
        c1, c2, c3 = st.columns(3)
        explain = c1.checkbox("Re-explain", value=True, key=f"{key}-explain")
        score = c1.checkbox("Score", value=True, key=f"{key}-score")
        backend = c2.selectbox("Backend", BACKENDS, key=f"{key}-backend")
        model = c2.text_input("Model", value=defaults.model, key=f"{key}-model",
                              help="qwen1.5b (CPU default), smollm2 (fast, weak), a local folder, a .gguf file, "
                                   "or the server's model name")
        base_url = c3.text_input("Server base URL (openai)", value="", key=f"{key}-url",
                                 placeholder="http://127.0.0.1:8000/v1")
        api_key = c3.text_input("API key (openai)", value="", type="password", key=f"{key}-apikey")
        c4, c5, c6 = st.columns(3)
        scorers = c4.multiselect("Scorers", SCORERS, default=defaults.scorers, key=f"{key}-scorers")
        n_explain = c5.number_input("Examples shown to the explainer", 5, 100, defaults.n_explain,
                                    key=f"{key}-nexplain")
        per_prompt = c5.number_input("Examples per detection/fuzzing prompt", 1, 20, defaults.per_prompt,
                                     key=f"{key}-pp")
        mode = c6.selectbox("Detection/fuzzing read-out", ("logprob", "generate"), key=f"{key}-mode")
        strategy = c6.selectbox("Explanation examples", ("top", "random", "quantiles", "mix"), key=f"{key}-strat")
        explainer = c4.selectbox("Explainer", EXPLAINERS, key=f"{key}-explainer",
                                 help="contrastive: also shows similar windows where the latent is silent")
        submitted = st.form_submit_button(f"Launch on {len(latents)} latent(s)", disabled=not latents)
    if store is not None:  # at the form's backend, model and scorers as last submitted (a form reruns on submit)
        chosen = InterpretConfig(backend=backend, model=model, scorers=list(scorers) or defaults.scorers)
        sizes = {h: store.n_latents(h) for h in store.hookpoints()}
        st.caption(views.campaign_estimate(sizes, hookpoint, len(latents), chosen))
        with st.expander("Cost per latent set"):
            st.dataframe(views.campaign_table(sizes, chosen), hide_index=True, key=f"{key}-cost")
    if not submitted:
        return None
    if not (explain or score):
        st.warning("Choose re-explain, score or both.")
        return None
    cfg = InterpretConfig(run=run, hookpoint=hookpoint, latents=[int(x) for x in latents], backend=backend,
                          model=model, base_url=base_url, strategy=strategy, n_explain=int(n_explain),
                          scorers=list(scorers) or defaults.scorers, mode=mode, per_prompt=int(per_prompt),
                          explainer=explainer, force=True)
    args = jobs.interpret_args(cfg)
    steps = ([("explain", args)] if explain else []) + ([("score", args)] if score else [])
    what = " + ".join(s for s, _ in steps)
    env = {"OPENAI_API_KEY": api_key} if api_key else None  # never on a command line or in job.json
    job = jobs.launch_steps(steps, title=f"{what} {hookpoint} {_latent_list(latents)} ({backend}:{model})",
                            env=env)
    st.success(f"Launched job {job.id}: follow it on the Jobs page.")
    return job


@st.cache_resource(show_spinner=False)
def steering_subject(model: str):
    """The subject model for the Steer panel, loaded once per app process (float32: small α steps
    stay smooth, as in the intervention scorer)."""
    from autointerp.models.subject import load_subject

    return load_subject(model, dtype="float32")


@st.cache_resource(show_spinner=False)
def steering_directions(run_dir: str, latent_set: str, _info: dict, _subject):
    """(hookpoint, decoder directions) of a latent set, rebuilt from the run's coder once."""
    from autointerp.intervention.scorer import latent_directions

    return latent_directions(_info, latent_set, _subject)


def steer_panel(store: RunStore, hookpoint: str, latent: int, key: str = "steer") -> None:
    """Prompt, strength α or target KL, and the clean vs steered greedy continuation side by side
    (model text as plain text, never HTML); bad input is a one-line error."""
    from autointerp.intervention.playground import steer_prompt

    text = st.text_input("Prompt", key=f"{key}-prompt", placeholder="The history of the city begins")
    c1, c2, c3 = st.columns(3)
    by = c1.radio("Steer by", ("strength α", "target KL"), key=f"{key}-by", horizontal=True)
    if by == "strength α":
        value = c2.number_input("Strength α (L2 norm added at every position)", value=10.0, key=f"{key}-alpha")
    else:
        value = c2.number_input("Target KL of the next token (nats)", value=1.0, key=f"{key}-kl")
    tokens = int(c3.number_input("New tokens", min_value=1, max_value=100, value=20, key=f"{key}-tokens"))
    if not st.button("Steer", key=f"{key}-go"):
        return
    try:
        with st.spinner("Steering…"):
            subject = steering_subject(store.info["model"])
            site, directions = steering_directions(str(store.run_dir), hookpoint, store.info, subject)
            how = {"alpha": float(value)} if by == "strength α" else {"target_kl": float(value)}
            res = steer_prompt(subject, site, directions[int(latent)], text, tokens, **how)
    except AutointerpError as e:
        st.error(str(e))
        return
    left, right = st.columns(2)
    left.caption("Clean")
    left.text(res.clean)
    reached = "" if res.reached is None else (" (target reached)" if res.reached else " (target not reached)")
    right.caption(f"Steered: α = {res.alpha:.3g}, next-token KL = {res.kl:.3g} nats{reached}")
    right.text(res.steered)


def _latent_list(latents: list[int]) -> str:
    shown = ", ".join(str(x) for x in latents[:5])
    return f"latents {shown}" + (f" +{len(latents) - 5}" if len(latents) > 5 else "")


fmt_seconds = views.fmt_seconds


def figure_with_table(fig, table: pd.DataFrame, filename: str, key: str) -> None:
    """A figure, its PNG/SVG/PDF downloads and the CSV of the data behind it."""
    st.plotly_chart(fig, width="stretch", key=key)
    figure_downloads(fig, filename, key=f"dl-{key}")
    table_download(table, filename, key=f"dl-{key}-csv")


def latent_url(run: str, hookpoint: str, latent: int) -> str:
    """A link to the Latent page (query parameters as pick_run / pick_set / current_latent read them)."""
    from urllib.parse import urlencode

    return "Latent?" + urlencode({"run": run, "set": hookpoint, "latent": int(latent)})


def study_form(store: RunStore, run: str, study: str, key: str) -> jobs.Job | None:
    """Settings of one study, its estimated cost, and a button that launches it as a job."""
    from autointerp.config import AnalyzeConfig
    from autointerp.explain.sampling import STRATEGIES
    from autointerp.runs.studies import coder_sets, estimate_seconds

    defaults = AnalyzeConfig()
    sets = store.hookpoints()
    kw: dict = {}
    with st.form(key):
        c1, c2, c3 = st.columns(3)
        n = int(c1.number_input("Latents per condition", 3, 500, defaults.random, key=f"{key}-n",
                                help="at least 3: every number comes with a 95% CI over latents"))
        model = c2.text_input("Explainer / scorer model", value=defaults.model, key=f"{key}-model",
                              help="qwen1.5b (CPU default), smollm2 (fast, weak), a local folder or .gguf file")
        backend = c2.selectbox("Backend", BACKENDS, key=f"{key}-backend")
        base_url = c3.text_input("Server base URL (openai)", value="", key=f"{key}-url",
                                 placeholder="http://127.0.0.1:8000/v1")
        scorers = c3.multiselect("Scorers", [s for s in SCORERS if s != "intervention"], default=defaults.scorers,
                                 key=f"{key}-scorers")
        n_sets = 1
        if study == "sampling":
            kw["hookpoint"] = c1.selectbox("Latent set", sets, index=sets.index(defaults.hookpoint)
                                           if defaults.hookpoint in sets else 0, key=f"{key}-set")
            kw["strategies"] = c1.multiselect("Strategies", STRATEGIES, default=list(STRATEGIES), key=f"{key}-strat")
        elif study == "coders":
            kw["sets"] = c1.multiselect("Latent sets (first = reference)", sets, default=coder_sets(store, []),
                                        key=f"{key}-sets")
            n_sets = len(kw["sets"])
        elif study == "overlap":
            from autointerp.analysis.overlap import adjacent_pairs

            found = [f"{a}:{b}" for a, b in adjacent_pairs(store)]
            kw["pairs"] = c1.multiselect("Pairs of adjacent sets", found, default=found, key=f"{key}-pairs")
            kw["basis"] = c1.multiselect("Match on", ["decoder", "explanation"], default=["decoder", "explanation"],
                                         key=f"{key}-basis")
            n_sets = max(1, len(kw["pairs"]))
        cfg = AnalyzeConfig(run=run, random=n, model=model, backend=backend, base_url=base_url,
                            scorers=list(scorers) or defaults.scorers, **kw)
        st.caption(f"Estimated cost on 2 CPU cores: about {fmt_seconds(estimate_seconds(study, cfg, n_sets))} "
                   f"(docs/benchmarks.md, 'Analyses'); a GPU backend is much faster.")
        submitted = st.form_submit_button(f"Launch the {study} study")
    if not submitted:
        return None
    job = jobs.launch("analyze", [study, *jobs.config_args(cfg)], title=f"analyze {study} on {run} ({backend}:{model})")
    st.success(f"Launched job {job.id}: follow it on the Jobs page; results appear here as each chunk lands.")
    return job
