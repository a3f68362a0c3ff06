"""`autointerp validate`: does each scorer tell a latent's explanation from a random one?

For every chosen latent with an explanation, each scorer scores three explanations on the same test
examples (the test set and prompt layout are seeded per latent, never per explanation): the
latent's own, a random one (another chosen latent's, a seeded derangement) and a neutral one that
describes nothing. A scorer is *validated* on this run when the paired bootstrap 95% CI of
headline(true) - headline(random) over latents lies above 0. Per-latent values go to
results/validity, the per-scorer summary to results/validity_summary; neither touches a latent's
own scores.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from autointerp.config import InterpretConfig
from autointerp.errors import AutointerpError
from autointerp.interpret import _chunks, open_for_scoring, score_latent, scoring_models
from autointerp.jobs import report_progress
from autointerp.llm.lockstep import run_lockstep
from autointerp.metrics import paired_bootstrap_ci
from autointerp.prompts import NEUTRAL_EXPLANATION
from autointerp.store import append_results

log = logging.getLogger(__name__)

MIN_LATENTS = 3
WHICH = ("true", "random", "neutral")


def headline_value(row: dict) -> float:
    """The number a scorer is judged by: Pearson r for simulation, else AUROC."""
    value = row.get("correlation") if row["scorer"] == "simulation" else row.get("auroc")
    return float(value) if value is not None and np.isfinite(value) else float("nan")


def random_explanations(explanations: dict[int, str], seed: int) -> dict[int, str]:
    """Each latent gets another latent's explanation: a seeded cyclic shift of a shuffled order,
    so no latent keeps its own (a derangement)."""
    latents = sorted(explanations)
    order = np.random.default_rng(seed).permutation(len(latents))
    return {latents[order[i]]: explanations[latents[order[(i + 1) % len(latents)]]] for i in range(len(latents))}


def summarize_validity(per_latent: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per scorer: means of true / random / neutral, the paired diff and its bootstrap CI
    over latents that have both a true and a random value."""
    rows = []
    for scorer, g in per_latent.groupby("scorer", sort=False):
        wide = g.pivot_table(index="latent", columns="which", values="value", aggfunc="first")
        for col in WHICH:
            if col not in wide:
                wide[col] = np.nan
        paired = wide.dropna(subset=["true", "random"])
        diffs = (paired["true"] - paired["random"]).to_numpy()
        lo, hi = paired_bootstrap_ci(diffs, n_boot, seed) if len(diffs) >= 2 else (np.nan, np.nan)
        rows.append({"scorer": scorer, "n_latents": int(len(paired)),
                     "true_mean": float(paired["true"].mean()) if len(paired) else np.nan,
                     "random_mean": float(paired["random"].mean()) if len(paired) else np.nan,
                     "neutral_mean": float(wide["neutral"].mean()) if wide["neutral"].notna().any() else np.nan,
                     "diff": float(diffs.mean()) if len(diffs) else np.nan, "ci_lo": lo, "ci_hi": hi,
                     "validated": bool(np.isfinite(lo) and lo > 0)})
    return pd.DataFrame(rows)


def run_validate(cfg: InterpretConfig, client=None) -> pd.DataFrame:
    """Score true, random and neutral explanations of the chosen latents; store and return the
    per-scorer summary."""
    store, latents, _, expl = open_for_scoring(cfg)
    expl = {x: e for x, e in expl.items() if x in set(latents)}
    if len(expl) < MIN_LATENTS:
        raise AutointerpError(f"validate needs at least {MIN_LATENTS} explained latents of {cfg.hookpoint}; "
                              f"{len(expl)} of the {len(latents)} chosen have an explanation: run "
                              f"`autointerp explain` on more latents first")
    others = random_explanations(expl, cfg.seed)
    client, embedder = scoring_models(cfg, client)
    validation_id = uuid.uuid4().hex
    rows: list[dict] = []
    with tqdm(total=len(expl), desc=f"validate {cfg.hookpoint}", unit="latent") as bar:
        report_progress(0, len(expl))

        def job(client, latent: int) -> list[dict]:
            # The three explanations are read in the same detection/fuzzing passes (one examples
            # prefix per prompt); the cache hands the readings from the first call to the others.
            cache: dict = {}
            texts = (("true", expl[latent]), ("random", others[latent]), ("neutral", NEUTRAL_EXPLANATION))
            out = []
            for which, text in texts:
                # the neutral explanation is read uncalibrated: calibrated against itself it is 0.5
                one = cfg if which != "neutral" else dataclasses.replace(cfg, calibrate=False)
                scores, _ = score_latent(client, store, cfg.hookpoint, latent, text, one, embedder, cache=cache,
                                         also=tuple(t for _, t in texts))
                out += [{"validation_id": validation_id, "hookpoint": cfg.hookpoint, "latent": int(latent),
                         "scorer": s["scorer"], "which": which, "explanation": text, "value": headline_value(s),
                         "n": s.get("n"), "n_failed": s.get("n_failed"), "error": s.get("error"),
                         "model": s.get("model"), "mode": s.get("mode")} for s in scores]
            return out

        for chunk in _chunks(sorted(expl), cfg.chunk):  # a chunk's latents share backend calls
            for got in run_lockstep(client, [functools.partial(job, latent=x) for x in chunk]):
                rows += got
            bar.update(len(chunk))
            report_progress(bar.n, len(expl))
    per_latent = pd.DataFrame(rows)
    summary = summarize_validity(per_latent, seed=cfg.seed)
    models = per_latent.groupby("scorer").model.first().to_dict()
    modes = per_latent.groupby("scorer")["mode"].first().to_dict()
    append_results(store.run_dir, "validity", rows)
    append_results(store.run_dir, "validity_summary",
                   [{**r, "validation_id": validation_id, "hookpoint": cfg.hookpoint, "model": models.get(r["scorer"]),
                     "mode": modes.get(r["scorer"]), "calibrated": bool(cfg.calibrate)}
                    for r in summary.to_dict("records")])
    for r in summary.itertuples():
        log.info("%s: true %.3f, random %.3f, diff %.3f [%.3f, %.3f] over %d latents: %s", r.scorer, r.true_mean,
                 r.random_mean, r.diff, r.ci_lo, r.ci_hi, r.n_latents, "validated" if r.validated else "NOT validated")
    return summary
