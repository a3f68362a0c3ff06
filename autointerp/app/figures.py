"""Plotly figures shared by the app and `autointerp export`, and their static export.

Builders are pure (data -> go.Figure). Export renders through kaleido 1.x, which drives a
headless Chromium: starting it costs ~1.5-2 s, a render on a started one ~0.15 s, so one
browser is started on first use and kept for the process (the app and export render many).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from autointerp.analysis import HEADLINE_LABEL, linear_fit, scorer_columns
from autointerp.analysis.scores import chance
from autointerp.core.errors import AutointerpError

log = logging.getLogger(__name__)

TEMPLATE = "plotly_white"
FORMATS = ("png", "svg", "pdf")
WIDTH, HEIGHT = 900, 550
RENDER_TIMEOUT_S = 60.0
INSTALL_HINT = "run `apt-get install chromium` (or set BROWSER_PATH to a Chrome/Chromium binary)"


# ---------------------------------------------------------------------------------------------
# builders


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x, yaxis_title=y,
                      margin={"l": 70, "r": 30, "t": 70, "b": 60})
    return fig


def activation_histogram(hist: pd.DataFrame, title: str = "Activation histogram",
                         log_y: bool = False) -> go.Figure:
    """Bars of a latent's activation histogram (a table from analysis.histogram_table)."""
    lo, hi = hist["bin_lo"].to_numpy(float), hist["bin_hi"].to_numpy(float)
    fig = go.Figure(go.Bar(x=(lo + hi) / 2, y=hist["count"], width=hi - lo, marker_line_width=0.5,
                           marker_line_color="white",
                           customdata=np.stack([lo, hi], axis=1) if len(hist) else None,
                           hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y} tokens<extra></extra>"))
    if log_y:
        fig.update_yaxes(type="log")
    return _layout(fig, title, "activation", "tokens" + (" (log scale)" if log_y else ""))


MAX_BOX_POINTS = 5_000  # above this many latents a scorer's box is drawn from its quartiles, without points


def score_distributions(table: pd.DataFrame, title: str = "Score distribution per scorer") -> go.Figure:
    """One box per scorer of a score table, every latent shown as a point; a scorer with more than
    MAX_BOX_POINTS latents gets a box computed here from all of them and no points (a million
    points would make a figure of tens of MB that the browser cannot draw)."""
    fig = go.Figure()
    own_chance = []  # scorers whose chance is not AUROC's 0.5 (intruder 0.2, simulation 0): marked on their box
    for scorer in scorer_columns(table):
        values = table[scorer].astype(float).dropna()
        name = f"{scorer} (n={len(values):,})"
        if len(values) > MAX_BOX_POINTS:
            fig.add_trace(go.Box(x=[name], name=name, boxpoints=False, **box_stats(values.to_numpy())))
        else:
            fig.add_trace(go.Box(y=values, name=name, boxpoints="all", jitter=0.4,
                                 pointpos=0, text=table.loc[values.index, "latent"].astype(str),
                                 hovertemplate="latent %{text}: %{y:.3f}<extra></extra>"))
        if chance(scorer) != 0.5:
            own_chance.append((name, chance(scorer)))
    for name, level in own_chance:
        fig.add_trace(go.Scatter(x=[name], y=[level], mode="markers", marker={"symbol": "line-ew-open", "size": 40,
                                                                              "color": "gray"},
                                 hovertemplate=f"chance {level:g}<extra></extra>", showlegend=False))
    fig.add_hline(y=0.5, line_dash="dot", line_color="gray", annotation_text="AUROC chance",
                  annotation_position="bottom right")
    fig.update_layout(showlegend=False)
    return _layout(fig, f"{title}<br><sup>{HEADLINE_LABEL}</sup>", "scorer", "score")


def box_stats(values: np.ndarray) -> dict[str, list[float]]:
    """Plotly's precomputed box: quartiles (linear interpolation, as Plotly's own), Tukey fences
    at the furthest values within 1.5 IQR, and the mean."""
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    return {"q1": [q1], "median": [median], "q3": [q3], "lowerfence": [inside.min()],
            "upperfence": [inside.max()], "mean": [values.mean()]}


def correlation_heatmap(rho: pd.DataFrame, n: pd.DataFrame,
                        title: str = "Spearman correlation between scorers") -> go.Figure:
    """Heatmap of rho on a fixed -1..1 scale; each cell says rho and the number of shared latents."""
    text = [[("–" if pd.isna(rho.iloc[i, j]) else f"{rho.iloc[i, j]:.2f}") + f"<br>n={int(n.iloc[i, j])}"
             for j in range(rho.shape[1])] for i in range(rho.shape[0])]
    z = rho.to_numpy(float)
    fig = go.Figure(go.Heatmap(z=np.where(np.isnan(z), None, z), x=list(rho.columns), y=list(rho.index),
                               zmin=-1, zmax=1, colorscale="RdBu", text=text, texttemplate="%{text}",
                               colorbar={"title": "rho"}, hovertemplate="%{y} vs %{x}: %{text}<extra></extra>"))
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(autorange="reversed", showgrid=False)
    return _layout(fig, title, "scorer", "scorer")


def decile_accuracy(df: pd.DataFrame, title: str = "Accuracy per activation decile") -> go.Figure:
    """One line per scorer over deciles (a table from analysis.accuracy_per_decile)."""
    fig = go.Figure()
    for scorer, row in df.iterrows():
        row = row.dropna()
        fig.add_trace(go.Scatter(x=[int(d) for d in row.index], y=row.to_numpy(float), mode="lines+markers",
                                 name=str(scorer)))
    ticks = sorted(int(d) for d in df.columns)
    fig.update_xaxes(tickvals=ticks, ticktext=["non-act." if d == 0 else str(d) for d in ticks])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "activation decile (0 = non-activating, 10 = strongest)",
                   "mean accuracy over latents")


def intervention_vs_kl(df: pd.DataFrame,
                       title: str = "Intervention score vs target KL") -> go.Figure:
    """One line per condition (latent / random direction, true / random explanation) over target
    KL on a log axis, mean with its 95% CI as error bars (a table from analysis.intervention_by_kl)."""
    fig = go.Figure()
    for condition, g in df.groupby("condition", sort=False):
        g = g.sort_values("target_kl")
        fig.add_trace(go.Scatter(
            x=g.target_kl, y=g["mean"], mode="lines+markers", name=str(condition),
            error_y={"type": "data", "symmetric": False, "array": (g.ci_hi - g["mean"]).to_numpy(),
                     "arrayminus": (g["mean"] - g.ci_lo).to_numpy()},
            customdata=g.n, hovertemplate="KL %{x:g}: %{y:.3f} nats (n=%{customdata})<extra></extra>"))
    fig.add_hline(y=0, line_dash="dot", line_color="gray")
    fig.update_xaxes(type="log")
    return _layout(fig, f"{title}<br><sup>mean over latents, 95% CI</sup>", "target KL of the next token (nats)",
                   "log P(expl | steered) − log P(expl | clean), nats")


def intervention_vs_fuzzing(df: pd.DataFrame,
                            title: str = "Intervention vs fuzzing score per latent") -> go.Figure:
    """Each latent's intervention headline against its fuzzing headline, the least-squares line,
    and Pearson r with n in the title (a table from analysis.intervention_vs_fuzzing)."""
    fit = linear_fit(df.fuzzing, df.intervention)
    fig = go.Figure(go.Scatter(x=df.fuzzing, y=df.intervention, mode="markers", name="latents",
                               text=df.latent.astype(str),
                               hovertemplate="latent %{text}: fuzzing %{x:.3f}, intervention %{y:.3f}<extra></extra>"))
    if np.isfinite(fit["slope"]):
        xs = np.array([df.fuzzing.min(), df.fuzzing.max()], dtype=float)
        fig.add_trace(go.Scatter(x=xs, y=fit["intercept"] + fit["slope"] * xs, mode="lines", name="least squares"))
    r = "–" if not np.isfinite(fit["r"]) else f"{fit['r']:.2f}"
    return _layout(fig, f"{title}<br><sup>Pearson r = {r}, n = {fit['n']}</sup>", "fuzzing (AUROC)",
                   "intervention score (nats)")


# ---------------------------------------------------------------------------------------------
# the paper's analyses (tables from autointerp.analysis.*)


def _error_bars(mid, lo, hi) -> dict:
    mid, lo, hi = (np.asarray(x, dtype=float) for x in (mid, lo, hi))
    return {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - mid), "arrayminus": np.nan_to_num(mid - lo)}


def condition_scores(scores: pd.DataFrame, summary: pd.DataFrame, scorer: str, title: str) -> go.Figure:
    """Per condition (strategy, latent set): every latent's score as a point in a box, and the
    mean with its 95% CI beside it; n per condition in the axis labels."""
    fig = go.Figure()
    s = scores[scores.scorer == scorer] if len(scores) else scores
    labels = {r.condition: f"{r.condition} (n={r.n})" for r in summary.itertuples()}
    for r in summary.itertuples():
        g = s[s.condition == r.condition]
        fig.add_trace(go.Box(y=g.value.astype(float), name=labels[r.condition], boxpoints="all", jitter=0.4,
                             pointpos=0, marker_color="#4c78a8", line_color="#4c78a8", showlegend=False,
                             text=g.latent.astype(str), hovertemplate="latent %{text}: %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[labels[c] for c in summary.condition], y=summary["mean"], mode="markers",
                             marker={"symbol": "diamond", "size": 11, "color": "#e45756"}, name="mean, 95% CI",
                             error_y=_error_bars(summary["mean"], summary.mean_lo, summary.mean_hi)))
    fig.add_hline(y=chance(scorer), line_dash="dot", line_color="gray", annotation_text="chance",
                  annotation_position="bottom right")
    what = {"simulation": "Pearson r", "intruder": "share of right intruder calls"}.get(scorer, "AUROC")
    return _layout(fig, f"{title}<br><sup>{scorer}: {what} per latent; box = latents, "
                        f"diamond = mean with 95% CI</sup>", "", scorer)


def condition_deciles(dec: pd.DataFrame, scorer: str, title: str) -> go.Figure:
    """Accuracy per activation decile (0 = silent windows), one line per condition, 95% CIs."""
    fig = go.Figure()
    for condition, g in dec.groupby("condition", sort=False):
        fig.add_trace(go.Scatter(x=g.decile, y=g["mean"], mode="lines+markers", name=str(condition),
                                 error_y=_error_bars(g["mean"], g.ci_lo, g.ci_hi), customdata=g.n,
                                 hovertemplate="decile %{x}: %{y:.3f} (n=%{customdata} latents)<extra></extra>"))
    ticks = sorted(int(d) for d in dec.decile.unique()) if len(dec) else []
    fig.update_xaxes(tickvals=ticks, ticktext=["silent" if d == 0 else str(d) for d in ticks])
    fig.update_yaxes(range=[0, 1.05])
    return _layout(fig, f"{title}<br><sup>{scorer}: mean accuracy over latents with 95% CI</sup>",
                   "activation decile (0 = silent windows, 10 = strongest)", "accuracy")


def overlap_bars(table: pd.DataFrame, basis: str, title: str = "Adjacent-layer overlap") -> go.Figure:
    """Per pair of adjacent sets: mean matched similarity and its baseline, 95% CIs, grouped
    by family (residual stream vs MLP output)."""
    t = table[table.basis == basis]
    x = [[f for f in t.family], [p for p in t.pair]]
    fig = go.Figure([
        go.Bar(x=x, y=t.matched_mean, name="matched (Hungarian)" if basis != "partner explanation"
               else "decoder partners", error_y=_error_bars(t.matched_mean, t.matched_lo, t.matched_hi),
               customdata=t.n, hovertemplate="%{x}: %{y:.3f} (n=%{customdata})<extra></extra>"),
        go.Bar(x=x, y=t.baseline_mean, name=f"baseline ({t.baseline.iloc[0]})" if len(t) else "baseline",
               error_y=_error_bars(t.baseline_mean, t.baseline_lo, t.baseline_hi),
               hovertemplate="%{x}: %{y:.3f}<extra></extra>")])
    fig.update_layout(barmode="group")
    what = {"decoder": "cosine of decoder directions", "explanation": "cosine of explanation embeddings (MiniLM)",
            "partner explanation": "explanation similarity of decoder-matched latents"}[basis]
    n = "–" if t.empty else f"{int(t.n.min())}–{int(t.n.max())}" if t.n.nunique() > 1 else str(int(t.n.iloc[0]))
    return _layout(fig, f"{title}: {basis}<br><sup>{what}; mean with 95% CI, n = {n} pairs per bar</sup>",
                   "family / pair of layers", "similarity")


def agreement_intervals(table: pd.DataFrame, title: str = "Scorer agreement") -> go.Figure:
    """Spearman rho with its bootstrap 95% CI for each pair of scorers, n in the labels."""
    labels = [f"{r.scorer_a} vs {r.scorer_b} (n={r.n})" for r in table.itertuples()]
    fig = go.Figure(go.Scatter(x=table.rho, y=labels, mode="markers", marker={"size": 10},
                               error_x=_error_bars(table.rho, table.ci_lo, table.ci_hi),
                               hovertemplate="%{y}: rho %{x:.2f}<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="gray")
    fig.update_xaxes(range=[-1.05, 1.05])
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"{title}<br><sup>Spearman rho over latents both scorers scored, bootstrap 95% CI</sup>",
                   "Spearman rho", "")


# ---------------------------------------------------------------------------------------------
# export


def find_chromium() -> str:
    """The browser kaleido will drive: $BROWSER_PATH if set, else Chromium/Chrome on PATH or in
    the usual places. Checked up front because a browser that fails to start inside kaleido's
    worker thread surfaces as a hang or a long traceback, not an error a user can act on."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise AutointerpError(f"BROWSER_PATH={env!r} is not an executable browser: {INSTALL_HINT}")
    from choreographer.browsers.chromium import Chromium

    path = Chromium.find_browser(skip_local=False)
    if not path:
        raise AutointerpError(f"figure export needs Chromium and none was found: {INSTALL_HINT}")
    return path


def _quiet_browser_logs() -> None:
    """kaleido and choreographer log every tab and temp folder at INFO; keep ours readable
    unless someone configured them on purpose."""
    for name in ("kaleido", "choreographer", "logistro"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)


class _Renderer:
    """One kaleido browser on an event loop in a daemon thread; any thread may submit renders."""

    def __init__(self, browser: str):
        import kaleido

        _quiet_browser_logs()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kaleido", daemon=True)
        self._thread.start()

        async def start():  # the browser's asyncio objects must be made on its own loop
            k = kaleido.Kaleido(n=1, path=browser, mathjax=False, timeout=RENDER_TIMEOUT_S)  # no CDN offline
            await k.open()
            return k

        try:
            self._k = self._call(start(), RENDER_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def render(self, fig: go.Figure, opts: dict) -> bytes:
        return self._call(self._k.calc_fig(fig, opts=opts), RENDER_TIMEOUT_S + 5)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def close(self) -> None:
        try:
            self._call(self._k.close(), 20)
        finally:
            self._stop_loop()


_renderer: _Renderer | None = None
_renderer_lock = threading.Lock()


def _get_renderer() -> _Renderer:
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            browser = find_chromium()
            try:
                _renderer = _Renderer(browser)
            except Exception as e:
                raise AutointerpError(f"Chromium at {browser} did not start for figure export "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}): "
                                      f"{INSTALL_HINT}") from e
            log.debug("kaleido started with %s", browser)
        return _renderer


@atexit.register
def close_renderer() -> None:
    """Stop the export browser (it restarts on the next export)."""
    global _renderer
    with _renderer_lock:
        if _renderer is not None:
            r, _renderer = _renderer, None
            try:
                r.close()
            except Exception as e:  # noqa: BLE001 - shutting down; nothing left to save
                log.debug("closing kaleido: %s", e)


def figure_bytes(fig: go.Figure, fmt: str, width: int = WIDTH, height: int = HEIGHT, scale: float = 1.0) -> bytes:
    """The figure as a png, svg or pdf file's bytes (png is width*scale x height*scale pixels)."""
    if fmt not in FORMATS:
        raise AutointerpError(f"cannot export a figure as {fmt!r}: use one of {', '.join(FORMATS)}")
    renderer = _get_renderer()
    try:
        return renderer.render(fig, {"format": fmt, "width": width, "height": height, "scale": scale})
    except Exception as e:
        close_renderer()  # a crashed or hung browser is replaced on the next call
        raise AutointerpError(f"rendering a {fmt} figure failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else 'no message'}): try again; "
                              f"if it persists, check that Chromium runs (`chromium --version`)") from e
