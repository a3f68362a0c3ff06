"""`autointerp analyze STUDY`: the work behind the paper's analyses, stored as results.

* sampling: the same latents explained from top / random / quantiles / mix examples; every
  explanation of a latent is scored on ONE test set (the windows no strategy showed), in the same
  detection/fuzzing passes, so strategies differ only in their explanation.
* coders: random latents of several latent sets (SAE latents, raw neurons, top-k neurons, random
  directions) explained and scored the same way.
* overlap: latent sets at adjacent layers matched with the Hungarian algorithm on decoder cosine
  (every latent) and on explanation embeddings (a sample of latents and their decoder partners).
* agreement: nothing to run (it reads the stored scores); `analyze agreement` prints it.

Explanations made for sampling and coders go to results/study_explanations, never to
results/explanations, so a study never replaces a latent's current explanation. Rows are written
per chunk of latents, so the app shows a study while it runs and a killed study keeps its chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import uuid

import pandas as pd

from autointerp.analysis import agreement as agreement_analysis
from autointerp.analysis import coders as coders_analysis
from autointerp.analysis import overlap as overlap_analysis
from autointerp.analysis import sampling as sampling_analysis
from autointerp.analysis.stats import MIN_N
from autointerp.config import EXPLANATION_FREE, SCORERS, STUDIES, AnalyzeConfig, latent_cost_s
from autointerp.core.errors import AutointerpError
from autointerp.explain.explainers import explain_latents
from autointerp.llm.lockstep import run_lockstep
from autointerp.runs.interpret import (llm_client, sampling_config, explain_config, explain_work, score_latent,
                                  scoring_models, select_latents)
from autointerp.core.progress import report_progress
from autointerp.runs.executor import chunks, execute
from autointerp.explain.sampling import STRATEGIES
from autointerp.store import RunStore, append_results, present, remove_stale_result_temp, run_path
from autointerp.runs.validity import headline_value

log = logging.getLogger(__name__)

CONTEXT_SCORERS = tuple(s for s in SCORERS if s != "intervention")


def _open(cfg: AnalyzeConfig) -> RunStore:
    bad = [s for s in cfg.scorers if s not in CONTEXT_SCORERS]
    if bad:
        raise AutointerpError(f"studies score with context scorers only; {bad} cannot be used: choose from "
                              f"{', '.join(CONTEXT_SCORERS)}")
    store = RunStore(run_path(cfg.run))
    remove_stale_result_temp(store.run_dir)
    return store


def _enough(latents: list[int], where: str) -> None:
    if len(latents) < MIN_N:
        raise AutointerpError(f"{where} has {len(latents)} latents to study; a confidence interval needs at least "
                              f"{MIN_N}: pass --random {MIN_N} or more, or cache more tokens so more latents fire")


def explain_and_score(store: RunStore, client, embedder, cfg: AnalyzeConfig, head: dict, hookpoint: str,
                       latents: list[int], conditions: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Explain `latents` once per condition (condition -> sampling strategy) and score every
    explanation of a latent on one test set: the windows none of its explanations showed."""
    ecfg = explain_config(cfg)
    explained: list[dict] = []
    for condition, strategy in conditions.items():
        sampling = dataclasses.replace(sampling_config(cfg), strategy=strategy)
        explained += [{**r, **head, "condition": condition}
                      for r in explain_latents(client, store, hookpoint, latents, sampling, ecfg)]

    def score_one(client, latent: int) -> list[dict]:
        mine = [r for r in explained if r["latent"] == latent]
        shown = sorted({tuple(k) for r in mine if r.get("shown") for k in json.loads(r["shown"])})
        texts = tuple(dict.fromkeys(r["explanation"] for r in mine if present(r["explanation"])))
        cache: dict = {}
        out: list[dict] = []
        for r in mine:
            if not present(r["explanation"]):
                continue
            scores, _ = score_latent(client, store, hookpoint, latent, r["explanation"], cfg, embedder,
                                     shown=shown, cache=cache, also=texts)
            out += [{**head, "condition": r["condition"], "hookpoint": hookpoint, "latent": int(latent),
                     "scorer": s["scorer"], "explanation": r["explanation"], "value": headline_value(s),
                     "n": s.get("n"), "n_failed": s.get("n_failed"), "error": s.get("error"),
                     "model": s.get("model"), "mode": s.get("mode"),
                     "accuracy_per_decile": s.get("accuracy_per_decile")} for s in scores]
        return out

    # the latents' scoring shares backend calls (llm/lockstep.py)
    scored = [row for rows in run_lockstep(client, [functools.partial(score_one, latent=x) for x in latents])
              for row in rows]
    return explained, scored


def _run_conditions(store: RunStore, cfg: AnalyzeConfig, study: str,
                    plan: list[tuple[str, list[int], dict[str, str]]], client=None) -> str:
    """plan: (latent set, latents, condition -> strategy). Returns the study id."""
    study_id = uuid.uuid4().hex
    head = {"study_id": study_id, "study": study}
    total = sum(len(latents) for _, latents, _ in plan)
    done = failed = 0
    report_progress(0, total)

    def write(unit: tuple, part: tuple[list[dict], list[dict]]) -> None:
        nonlocal done, failed
        explained, scored = part
        append_results(store.run_dir, "study_explanations", explained)
        append_results(store.run_dir, "study_scores", scored)
        done += len(unit[2])
        failed += sum(not present(r["explanation"]) for r in explained)
        report_progress(done, total, failed=failed)
        log.info("%s study: %d of %d latents done (%d failed explanations)", study, done, total, failed)

    units = [(head, hookpoint, chunk, conditions) for hookpoint, latents, conditions in plan
             for chunk in chunks(latents, cfg.chunk)]
    execute(cfg, units, study_work, write, local={"client": client, "store": store})
    return study_id


def run_sampling(cfg: AnalyzeConfig, client=None) -> pd.DataFrame:
    bad = [s for s in cfg.strategies if s not in STRATEGIES]
    if bad or not cfg.strategies:
        raise AutointerpError(f"unknown sampling strategies {bad}: choose from {', '.join(STRATEGIES)}")
    free = [s for s in cfg.scorers if s in EXPLANATION_FREE]
    if free:
        raise AutointerpError(f"{', '.join(free)} scores the latent, not its explanation: every sampling strategy "
                              f"would get the same score, so drop it from --scorers")
    store = _open(cfg)
    latents = select_latents(store, cfg)
    _enough(latents, f"{cfg.hookpoint} of run {store.run_dir.name}")
    study_id = _run_conditions(store, cfg, "sampling", [(cfg.hookpoint, latents, {s: s for s in cfg.strategies})],
                               client)
    return sampling_analysis.strategy_summary(store.study_results("study_scores", study_id=study_id), cfg.scorer)


def coder_sets(store: RunStore, sets: list[str]) -> list[str]:
    """The sets a coders study compares: as given (checked), else every set of the run, SAEs first."""
    have = store.hookpoints()
    unknown = [s for s in sets if s not in have]
    if unknown:
        raise AutointerpError(f"run {store.run_dir.name} has no latent sets {unknown}: choose from {', '.join(have)}")
    if sets:
        return list(sets)
    kinds = {name: c.get("kind") for name, c in store.info.get("coders", {}).items()}
    return sorted(have, key=lambda s: (coders_analysis.KIND_ORDER.index(kinds.get(s))
                                       if kinds.get(s) in coders_analysis.KIND_ORDER else 99, s))


def run_coders(cfg: AnalyzeConfig, client=None) -> pd.DataFrame:
    store = _open(cfg)
    sets = coder_sets(store, cfg.sets)
    if len(sets) < 2:
        raise AutointerpError(f"the coders study compares at least 2 latent sets; run {store.run_dir.name} has "
                              f"{sets}: cache an SAE beside neurons@HP / topk:K@HP / random:N:K@HP coders")
    plan = []
    for s in sets:
        latents = select_latents(store, dataclasses.replace(cfg, hookpoint=s, latents=[], top_frequent=0))
        _enough(latents, f"latent set {s}")
        plan.append((s, latents, {s: cfg.strategy}))
    study_id = _run_conditions(store, cfg, "coders", plan, client)
    return coders_analysis.coder_summary(store.study_results("study_scores", study_id=study_id), cfg.scorer,
                                         reference=sets[0])


def run_overlap(cfg: AnalyzeConfig, client=None) -> pd.DataFrame:
    """Match every pair's decoders (all latents), then, with 'explanation' in --basis, the
    explanations of --random latents of A and of their decoder partners in B."""
    bad = [b for b in cfg.basis if b not in overlap_analysis.BASES]
    if bad or not cfg.basis:
        raise AutointerpError(f"unknown overlap basis {bad}: use decoder and/or explanation")
    store = _open(cfg)
    pairs = overlap_analysis.parse_pairs(store, cfg.pairs)
    study_id = uuid.uuid4().hex
    embedder = client_ = None
    loaded: dict = {}  # latent set -> decoder directions: a middle layer's SAE is in two pairs
    report_progress(0, len(pairs), unit="pair")
    for i, (a, b) in enumerate(pairs):
        family = overlap_analysis.family(store, a)
        wa, wb = overlap_analysis.decoders(store, a, b, loaded)
        match = overlap_analysis.match_decoders(wa, wb, seed=cfg.seed)
        head = {"study_id": study_id, "family": family, "set_a": a, "set_b": b}
        rows, summaries = [], []
        if "decoder" in cfg.basis:
            rows += [{**head, "basis": "decoder", "latent_a": int(x), "latent_b": int(y), "similarity": float(v),
                      "decoder_partner": True} for x, y, v in zip(match.rows, match.cols, match.similarity)]
            summaries.append({**head, **match.summary(), "basis": "decoder"})
        if "explanation" in cfg.basis:
            if embedder is None:
                from autointerp.models.embedder import load_embedder

                embedder = load_embedder()
            latents_a = select_latents(store, dataclasses.replace(cfg, hookpoint=a, latents=[], top_frequent=0))
            _enough(latents_a, f"latent set {a}")
            partner = dict(zip(match.rows.tolist(), match.cols.tolist()))
            latents_b = [int(partner[x]) for x in latents_a]
            texts = {}
            for s, latents in ((a, latents_a), (b, latents_b)):
                client_ = _explain_missing(store, cfg, s, latents, client or client_)
                have = store.explanations(s)
                texts[s] = {int(r.latent): r.explanation for r in have.itertuples() if present(r.explanation)}
            keep = [(x, y) for x, y in zip(latents_a, latents_b) if x in texts[a] and y in texts[b]]
            if len(keep) < MIN_N:
                raise AutointerpError(f"only {len(keep)} of {len(latents_a)} latent pairs of {a}:{b} have both "
                                      f"explanations; at least {MIN_N} are needed: explanations failed, see the log")
            ea = [texts[a][x] for x, _ in keep]
            eb = [texts[b][y] for _, y in keep]
            emb = embedder.encode(ea + eb, normalize_embeddings=True, batch_size=64)
            result = overlap_analysis.match_explanations(emb[: len(ea)], emb[len(ea):], seed=cfg.seed)
            model = getattr(client or client_, "name", None) or f"{cfg.backend}:{cfg.model}"
            for r, c in zip(result.rows, result.cols):
                rows.append({**head, "basis": "explanation", "latent_a": keep[r][0], "latent_b": keep[c][1],
                             "similarity": float(result.sim[r, c]), "decoder_partner": bool(r == c),
                             "explanation_a": ea[r], "explanation_b": eb[c]})
            summaries += [{**head, **result.summary(), "basis": "explanation", "model": model},
                          {**head, **result.partner_summary(), "basis": "partner explanation", "model": model}]
        append_results(store.run_dir, "overlap_pairs", rows)
        append_results(store.run_dir, "overlap_summary", summaries)
        report_progress(i + 1, len(pairs), unit="pair")
    return overlap_analysis.overlap_table(store.study_results("overlap_summary", study_id=study_id))


def _explain_missing(store: RunStore, cfg: AnalyzeConfig, hookpoint: str, latents: list[int], client):
    """Explain (as the latents' own explanations: they are plain input explanations) those of
    `latents` that have no explanation record yet; returns the client, loaded on first need."""
    have = set(store.explanations(hookpoint).latent.tolist())
    missing = [x for x in latents if x not in have]
    if not missing:
        return client
    if not cfg.ray:  # loaded here once, handed back for the caller's next latent set
        client = client or llm_client(cfg)
    execute(dataclasses.replace(cfg, hookpoint=hookpoint), list(chunks(missing, cfg.chunk)), explain_work,
            lambda _chunk, rows: append_results(store.run_dir, "explanations", rows),
            local={"client": client, "store": store})
    return client


def run_agreement(cfg: AnalyzeConfig, client=None) -> pd.DataFrame:
    store = RunStore(run_path(cfg.run))
    table = agreement_analysis.agreement_table(store, cfg.hookpoint or None, seed=cfg.seed)
    if table.empty:
        raise AutointerpError(f"run {store.run_dir.name} has no pair of scorers that both scored {MIN_N}+ latents: "
                              f"run `autointerp score` with two or more scorers first")
    return table


RUNNERS = {"sampling": run_sampling, "coders": run_coders, "overlap": run_overlap, "agreement": run_agreement}
assert tuple(RUNNERS) == STUDIES


def run_study(study: str, cfg: AnalyzeConfig, client=None) -> pd.DataFrame:
    if study not in RUNNERS:
        raise AutointerpError(f"unknown study {study!r}: choose from {', '.join(STUDIES)}")
    return RUNNERS[study](cfg, client)


def estimate_seconds(study: str, cfg: AnalyzeConfig, n_sets: int = 1) -> float:
    """Rough cost of a study on 2 CPU cores (docs/benchmarks.md "Analyses"): per explanation and
    per scored explanation, by explainer model; the overlap's decoder match is seconds."""
    per_explain, per_score = latent_cost_s(cfg.model, len(cfg.scorers))
    if study == "sampling":  # a latent's explanations share the detection/fuzzing examples passes
        return cfg.random * len(cfg.strategies) * (per_explain + SHARED_PASSES * per_score)
    if study == "coders":
        return cfg.random * n_sets * (per_explain + per_score)
    if study == "overlap":
        explain = 2 * cfg.random * per_explain if "explanation" in cfg.basis else 0.0
        return n_sets * (DECODER_MATCH_S + explain)
    return 1.0


SHARED_PASSES = 0.6  # the sampling study's scoring cost per explanation relative to scoring it alone
DECODER_MATCH_S = 15.0


def study_work(cfg: AnalyzeConfig, client=None, store: RunStore | None = None):
    """(study head, latent set, chunk, condition -> strategy) -> rows (executor.execute builds it)."""
    store = store or RunStore(run_path(cfg.run))
    llm, embedder = scoring_models(cfg, client or llm_client(cfg))  # explaining always needs the LLM
    return lambda head, hookpoint, chunk, conditions: explain_and_score(store, llm, embedder, cfg, head, hookpoint,
                                                                        chunk, conditions)
