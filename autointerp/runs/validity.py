"""`autointerp validate`: does each scorer tell a latent's explanation from a random one?

For every chosen latent with an explanation, each scorer scores three explanations on the same test
examples (the test set and prompt layout are seeded per latent, never per explanation): the
latent's own, a random one (another chosen latent's, a seeded derangement) and a neutral one that
describes nothing. Verdicts, from the paired differences headline(true) - headline(random) over
latents:
  validated       at least MIN_VERDICT_LATENTS latents and the exact sign-flip permutation test of
                  mean difference > 0 gives one-sided p < ALPHA (level checked by simulation in
                  tests/runs/test_validity.py);
  not validated   at least MIN_VERDICT_LATENTS latents, p >= ALPHA;
  too few latents fewer paired latents: no verdict either way;
  not measured    the scorer gave no headline number (e.g. no AUROC and no balanced accuracy).
The 95% interval shown is a Student t interval of the mean difference. Per-latent values go to
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

from autointerp.analysis.scores import DEFAULT_HEADLINE, HEADLINE
from autointerp.analysis.stats import sign_flip_p, t_ci
from autointerp.config import EXPLANATION_FREE, InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.core.progress import report_progress
from autointerp.runs.executor import chunks, execute
from autointerp.runs.interpret import open_for_scoring, score_latent, scoring_models
from autointerp.llm.lockstep import run_lockstep
from autointerp.explain.prompts import NEUTRAL_EXPLANATION
from autointerp.store import RunStore, append_results, run_path

log = logging.getLogger(__name__)

MIN_LATENTS = 3  # fewer explained latents: validate refuses to run
MIN_VERDICT_LATENTS = 10  # fewer paired latents: "too few latents", no verdict
ALPHA = 0.025  # one-sided, as the lower bound of a two-sided 95% interval
WHICH = ("true", "random", "neutral")


def headline_value(row: dict) -> float:
    """The number a scorer is judged by: the first of its HEADLINE metrics the row has (AUROC where
    the scorer read probabilities, balanced accuracy in generate mode, which has none; Pearson r for
    simulation; the share of right calls for intruder), as every view reads it."""
    for metric in HEADLINE.get(row["scorer"], DEFAULT_HEADLINE):
        value = row.get(metric)
        if value is not None and np.isfinite(value):
            return float(value)
    return float("nan")


def verdict(diffs: np.ndarray, n_measured: int) -> tuple[str, float]:
    """(verdict, one-sided p) for paired true - random differences; see the module docstring."""
    if n_measured == 0:
        return "not measured", float("nan")
    if len(diffs) < MIN_VERDICT_LATENTS:
        return "too few latents", float("nan")
    p = sign_flip_p(diffs)
    return ("validated" if p < ALPHA else "not validated"), p


def random_explanations(explanations: dict[int, str], seed: int) -> dict[int, str]:
    """Each latent gets another latent's explanation: a seeded cyclic shift of a shuffled order,
    so no latent keeps its own (a derangement)."""
    latents = sorted(explanations)
    order = np.random.default_rng(seed).permutation(len(latents))
    return {latents[order[i]]: explanations[latents[order[(i + 1) % len(latents)]]] for i in range(len(latents))}


def summarize_validity(per_latent: pd.DataFrame) -> pd.DataFrame:
    """One row per scorer: means of true / random / neutral, the paired diff with its t interval,
    the sign-flip p-value and the verdict, over latents that have both a true and a random value."""
    rows = []
    for scorer, g in per_latent.groupby("scorer", sort=False):
        wide = g.pivot_table(index="latent", columns="which", values="value", aggfunc="first", dropna=False)
        for col in WHICH:
            if col not in wide:
                wide[col] = np.nan
        paired = wide.dropna(subset=["true", "random"])
        diffs = (paired["true"] - paired["random"]).to_numpy()
        mean, lo, hi = t_ci(diffs)
        word, p = verdict(diffs, int(g.value.notna().sum()))
        rows.append({"scorer": scorer, "n_latents": int(len(paired)),
                     "true_mean": float(paired["true"].mean()) if len(paired) else np.nan,
                     "random_mean": float(paired["random"].mean()) if len(paired) else np.nan,
                     "neutral_mean": float(wide["neutral"].mean()) if wide["neutral"].notna().any() else np.nan,
                     "diff": mean, "ci_lo": lo, "ci_hi": hi, "p_value": p, "verdict": word,
                     "validated": word == "validated"})
    return pd.DataFrame(rows)


def run_validate(cfg: InterpretConfig, client=None) -> pd.DataFrame:
    """Score true, random and neutral explanations of the chosen latents; store and return the
    per-scorer summary."""
    free = [s for s in cfg.scorers if s in EXPLANATION_FREE]
    if free:
        raise AutointerpError(f"{', '.join(free)} scores the latent, not its explanation: a true and a random "
                              f"explanation cannot differ there, so drop it from --scorers")
    store, latents, _, expl = open_for_scoring(cfg)
    expl = {x: e for x, e in expl.items() if x in set(latents)}
    if len(expl) < MIN_LATENTS:
        raise AutointerpError(f"validate needs at least {MIN_LATENTS} explained latents of {cfg.hookpoint}; "
                              f"{len(expl)} of the {len(latents)} chosen have an explanation: run "
                              f"`autointerp explain` on more latents first")
    others = random_explanations(expl, cfg.seed)
    validation_id = uuid.uuid4().hex
    rows: list[dict] = []
    with tqdm(total=len(expl), desc=f"validate {cfg.hookpoint}", unit="latent") as bar:
        report_progress(0, len(expl))

        def write(chunk: list[int], got: list[dict]) -> None:
            rows.extend(got)
            bar.update(len(chunk))
            report_progress(bar.n, len(expl))

        # a chunk's latents share backend calls
        execute(cfg, list(chunks(sorted(expl), cfg.chunk)), validate_work, write, expl, others, validation_id,
                local={"client": client, "store": store})
    rows.sort(key=lambda r: r["latent"])  # Ray workers finish chunks in any order
    per_latent = pd.DataFrame(rows)
    summary = summarize_validity(per_latent)
    models = per_latent.groupby("scorer").model.first().to_dict()
    modes = per_latent.groupby("scorer")["mode"].first().to_dict()
    append_results(store.run_dir, "validity", rows)
    append_results(store.run_dir, "validity_summary",
                   [{**r, "validation_id": validation_id, "hookpoint": cfg.hookpoint, "model": models.get(r["scorer"]),
                     "mode": modes.get(r["scorer"]), "calibrated": bool(cfg.calibrate)}
                    for r in summary.to_dict("records")])
    for r in summary.itertuples():
        log.info("%s: true %.3f, random %.3f, diff %.3f [%.3f, %.3f] over %d latents, p %.4f: %s", r.scorer,
                 r.true_mean, r.random_mean, r.diff, r.ci_lo, r.ci_hi, r.n_latents, r.p_value, r.verdict)
    return summary


def validate_work(cfg: InterpretConfig, expl: dict[int, str], others: dict[int, str], validation_id: str,
                  client=None, store: RunStore | None = None):
    """chunk of latents -> validity rows: each latent's true, random and neutral explanations scored
    (executor.execute builds it, here or once per Ray worker)."""
    store = store or RunStore(run_path(cfg.run))
    client, embedder = scoring_models(cfg, client)

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

    def run(chunk: list[int]) -> list[dict]:
        return [r for got in run_lockstep(client, [functools.partial(job, latent=x) for x in chunk]) for r in got]

    return run
