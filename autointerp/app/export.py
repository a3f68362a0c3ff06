"""`autointerp export`: a run's figures (png/svg/pdf) and tables (CSV) into one folder, the same
figures the app offers for download, so a paper's plots can be regenerated without a browser tab."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from autointerp import analysis

from autointerp.app import figures
from autointerp.config import ExportConfig
from autointerp.core.errors import AutointerpError
from autointerp.core.paths import data_dir
from autointerp.core.atomic import atomic_write_bytes
from autointerp.store import RunStore, run_path

log = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class _Writer:
    """Writes files atomically under one folder and remembers what it wrote."""

    def __init__(self, out: Path, formats: list[str]):
        self.out, self.formats, self.written = out, formats, []

    def _put(self, name: str, data: bytes) -> None:
        path = self.out / name
        atomic_write_bytes(path, data)
        self.written.append(path)

    def table(self, name: str, df: pd.DataFrame, index: bool = False) -> None:
        self._put(f"{name}.csv", df.to_csv(index=index).encode())

    def figure(self, name: str, fig: go.Figure) -> None:
        for fmt in self.formats:
            self._put(f"{name}.{fmt}", figures.figure_bytes(fig, fmt))


def default_out(run: str) -> Path:
    return data_dir() / "exports" / Path(run).name


def _export_intervention(w: _Writer, store: RunStore, table: pd.DataFrame, hp: str | None) -> None:
    """The paper's Fig. 4 where the run has the data: score vs target KL with baselines, and
    intervention vs fuzzing per latent."""
    by_kl = analysis.intervention_by_kl(store, hp)
    if len(by_kl):
        w.table("intervention_vs_kl", by_kl)
        w.figure("intervention_vs_kl", figures.intervention_vs_kl(by_kl))
    pairs = analysis.intervention_vs_fuzzing(table)
    if len(pairs):
        w.table("intervention_vs_fuzzing", pairs)
        w.figure("intervention_vs_fuzzing", figures.intervention_vs_fuzzing(pairs))
    if by_kl.empty and pairs.empty:
        log.info("no intervention scores (with fuzzing scores beside them): skipping the intervention figures")


def _export_analyses(w: _Writer, store: RunStore) -> None:
    """Every study stored on the run (the Analyses page's figures and tables), under analyses/."""
    from autointerp.app.report import REPORTS

    for study, build in REPORTS.items():
        report = build(store)
        if report.missing:
            log.info("%s: %s", study, report.missing)
        for section in report.sections:
            w.table(f"analyses/{section.name}", section.table)
            if section.figure is not None:
                w.figure(f"analyses/{section.name}", section.figure)


def export_run(cfg: ExportConfig) -> list[Path]:
    """Write every figure and table of a run; figures that need scores are skipped (and logged)
    while the run has none. Returns the written paths."""
    bad = [f for f in cfg.formats if f not in figures.FORMATS]
    if bad:
        raise AutointerpError(f"cannot export figures as {bad}: use any of {', '.join(figures.FORMATS)}")
    store = RunStore(run_path(cfg.run))
    hookpoints = store.hookpoints()
    if cfg.hookpoint:
        if cfg.hookpoint not in hookpoints:
            raise AutointerpError(f"run {store.run_dir.name} has no latent set {cfg.hookpoint!r}: "
                                  f"choose one of {', '.join(hookpoints) or '(none cached yet)'}")
        hookpoints = [cfg.hookpoint]
    if cfg.formats:
        figures.find_chromium()  # fail before writing anything rather than halfway
    w = _Writer(Path(cfg.out) if cfg.out else default_out(cfg.run), list(cfg.formats))
    hp = cfg.hookpoint or None

    table = analysis.score_table(store, hp)
    if table.empty:
        log.info("run %s has no scores yet: skipping score distributions, scorer correlations and "
                 "accuracy per decile (run `autointerp score` first)", store.run_dir.name)
    else:
        w.table("scores", table)
        # every score with its n and 95 % interval (NaN where it was stored before intervals)
        w.table("score_intervals", analysis.interval_table(store, hp))
        w.figure("score_distributions", figures.score_distributions(table))
        rho, n = analysis.scorer_correlations(table)
        w.table("scorer_correlations_rho", rho, index=True)
        w.table("scorer_correlations_n", n, index=True)
        if len(rho) >= 2:
            w.figure("scorer_correlations", figures.correlation_heatmap(rho, n))
        else:
            log.info("only one scorer (%s) has run: skipping the correlation heatmap", ", ".join(rho.index))
        deciles = analysis.accuracy_per_decile(store, hp)
        if deciles.empty:
            log.info("no scorer recorded accuracy per decile (simulation does not): skipping that figure")
        else:
            w.table("accuracy_per_decile", deciles, index=True)
            w.figure("accuracy_per_decile", figures.decile_accuracy(deciles))
        _export_intervention(w, store, table, hp)

    _export_analyses(w, store)

    for h in hookpoints:
        latents, _ = store.latent_table(h, sort="frequency", limit=store.n_latents(h))
        w.table(f"latents_{_safe(h)}", latents)
        for latent in latents[latents["count"] > 0].latent.head(cfg.top_latents).tolist():
            hist = analysis.histogram_table(store, h, latent)
            name = f"histogram_{_safe(h)}_{latent}"
            w.table(name, hist)
            w.figure(name, figures.activation_histogram(hist, title=f"Activation histogram: {h} latent {latent}"))
    log.info("exported %d files to %s", len(w.written), w.out)
    return w.written
