"""`autointerp explain` / `autointerp score`: explain chosen latents, score their explanations.
Results go to append-only parts, one per chunk of latents, so a killed job loses at most a chunk
and a rerun skips what is done."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from autointerp.config import EXPLANATION_FREE, SCORER_SPECS, SCORERS, InterpretConfig
from autointerp.models.embedder import load_embedder
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point
from autointerp.intervention.scorer import SCORER as INTERVENTION
from autointerp.intervention.output import OutputExplainer
from autointerp.intervention.scorer import InterventionConfig, InterventionScorer
from autointerp.explain.explainers import ExplainConfig, explain_latents
from autointerp.explain.search_index import index_explanations
from autointerp.core.progress import report_progress
from autointerp.runs.executor import chunks, execute
from autointerp.core.milestones import record_milestone
from autointerp.llm import engine_of, make_client
from autointerp.llm.base import LLMConfig
from autointerp.score.metrics import INTERVAL_KEYS
from autointerp.llm.lockstep import run_lockstep
from autointerp.explain.sampling import (SamplingConfig, TooFewExamples, explanation_examples, scoring_examples,
                                 shown_windows)
from autointerp.score import ScoreContext, runner
from autointerp.store import (EXPLANATION_KINDS, append_results, compact_results, latent_seed, present,
                              remove_stale_result_temp, result_parts, run_path, RunStore)

log = logging.getLogger(__name__)


def select_latents(store: RunStore, cfg: InterpretConfig) -> list[int]:
    n_lat = store.n_latents(cfg.hookpoint)
    bad = [x for x in cfg.latents if not 0 <= x < n_lat]
    if bad:
        raise AutointerpError(f"latents {bad} do not exist in {cfg.hookpoint}: ids run from 0 to {n_lat - 1}")
    chosen = list(cfg.latents)
    if cfg.top_frequent:
        page, _ = store.latent_table(cfg.hookpoint, sort="frequency", limit=cfg.top_frequent)
        chosen += page.latent.tolist()
    if cfg.random:
        # Enough activations to explain and to leave a held-out test set: a latent with fewer
        # would only be recorded as a failure.
        need = max(cfg.min_examples, cfg.n_explain + 10 * cfg.test_per_quantile)
        active, _ = store.latent_table(cfg.hookpoint, min_frequency=need / store.info["n_tokens"], limit=n_lat)
        rng = np.random.default_rng(cfg.seed)
        pool = active.latent.to_numpy()
        chosen += rng.choice(pool, size=min(cfg.random, len(pool)), replace=False).tolist()
    if not chosen:
        raise AutointerpError("no latents chosen: pass --latents, --top-frequent N or --random N")
    return list(dict.fromkeys(int(x) for x in chosen))


def sampling_config(cfg: InterpretConfig) -> SamplingConfig:
    return SamplingConfig(strategy=cfg.strategy, n_explain=cfg.n_explain, test_per_quantile=cfg.test_per_quantile,
                          n_negative=cfg.n_negative, negatives=cfg.negatives, seed=cfg.seed,
                          min_examples=cfg.min_examples)


def explain_config(cfg: InterpretConfig) -> ExplainConfig:
    return ExplainConfig(threshold=cfg.threshold, show_activations=cfg.show_activations, cot=cfg.cot,
                         explainer=cfg.explainer, embedder=cfg.embedder)


def llm_client(cfg: InterpretConfig):
    return make_client(LLMConfig(backend=cfg.backend, model=cfg.model, batch_size=cfg.batch_size,
                                 device=cfg.device, dtype=cfg.dtype,
                                 base_url=cfg.base_url or None, api_key=cfg.api_key or None,
                                 timeout_s=cfg.timeout_s, max_retries=cfg.max_retries))


def check_kind(cfg: InterpretConfig) -> None:
    if cfg.kind not in EXPLANATION_KINDS:
        raise AutointerpError(f"unknown explanation kind {cfg.kind!r}: use --kind input or --kind output")


def _explainer(cfg: InterpretConfig, client, store: RunStore):
    """chunk of latents -> explanation records, of the kind cfg.kind asks for."""
    if cfg.kind == "output":
        return OutputExplainer(client, store, cfg).explain
    return lambda chunk: explain_latents(client, store, cfg.hookpoint, chunk, sampling_config(cfg), explain_config(cfg))


def run_explain(cfg: InterpretConfig, client=None) -> list[dict]:
    check_kind(cfg)
    if cfg.kind == "output":
        InterventionConfig.from_interpret(cfg)  # one-line errors before any model loads
    store = RunStore(run_path(cfg.run))
    remove_stale_result_temp(store.run_dir)
    latents = select_latents(store, cfg)
    done = store.explanations(cfg.hookpoint, kind=cfg.kind)
    if not cfg.force and len(done):
        # A rerun resumes: latents with a record, explanation or recorded failure, are done (a
        # deterministic explainer would fail the same way again); --force redoes them.
        have = set(done.latent.tolist())
        latents = [x for x in latents if x not in have]
    rows: list[dict] = []
    with tqdm(total=len(latents), desc=f"explain {cfg.hookpoint}", unit="latent") as bar:
        report_progress(0, len(latents))  # a job's progress.json (no-op outside a job)

        def write(chunk: list[int], part: list[dict]) -> None:
            append_results(store.run_dir, "explanations", part)
            fault_point("explain-chunk-written")
            if cfg.kind == "input":
                index_part(store, cfg.hookpoint)
            rows.extend(part)
            bar.update(len(chunk))
            report_progress(bar.n, len(latents), failed=sum(r["explanation"] is None for r in rows))

        execute(cfg, list(chunks(latents, cfg.chunk)), explain_work, write, local={"client": client, "store": store})
    failed = sum(r["explanation"] is None for r in rows)
    log.info("explained %d latents (%d failures)", len(rows), failed)
    compact_if_many(store.run_dir, ["explanations"], cfg.compact_at)
    return rows


def index_part(store: RunStore, hookpoint: str) -> None:
    """Grow the set's explanation search index by what just landed (MiniLM loads once per process,
    at the first part with a good explanation). The explanations are written already: an index that
    cannot be updated (no MiniLM, an unreadable graph) is logged and caught up by the app later."""
    try:
        index_explanations(store, hookpoint)
    except (AutointerpError, OSError) as e:
        log.warning("search index of %s not updated (%s); the app's search catches it up later", hookpoint, e)


def compact_if_many(run_dir: Path, kinds: list[str], at: int) -> None:
    """Merge each kind's result parts once a campaign has left `at` or more (0: never); the app may
    be reading, so the replaced parts stay for the grace period (store.compact_results)."""
    for kind in kinds:
        if at and len(result_parts(run_dir, kind)) >= at:
            compact_results(run_dir, kind)


def score_latent(client, store: RunStore, hookpoint: str, latent: int, explanation: str, cfg: InterpretConfig,
                 embedder=None, shown: list[tuple[int, int]] | None = None,
                 cache: dict | None = None, also: tuple[str, ...] = ()) -> tuple[list[dict], list[dict]]:
    """(score rows, decision rows) for every scorer on one latent's explanation. The test set
    leaves out `shown`, the (doc_id, start) windows the explainer saw: by default those stored with
    the explanation, recomputed from the settings only for records that predate storing them.
    `cache` and `also` let several explanations of one latent share detection/fuzzing passes."""
    sampling = sampling_config(cfg)
    base = {"hookpoint": hookpoint, "latent": int(latent), "explanation": explanation}
    if embedder is None and ("embedding" in cfg.scorers or cfg.negatives == "hard"):
        embedder = load_embedder(cfg.embedder)
    try:
        if shown is None:
            shown = shown_windows(store, hookpoint, latent, explanation)
        if shown is None:
            shown = explanation_examples(store, hookpoint, latent, sampling)
        activating, negatives = scoring_examples(store, hookpoint, latent, sampling, exclude=shown,
                                                 embedder=embedder)
    except TooFewExamples as e:
        return [{**base, "score_id": uuid.uuid4().hex, "scorer": s, "error": str(e), "n": 0, "n_failed": 0,
                 **({"explanation": None} if s in EXPLANATION_FREE else {})} for s in cfg.scorers], []
    scores, decisions = [], []
    seed = latent_seed(cfg.seed, hookpoint, latent)
    for scorer in cfg.scorers:
        result = runner(scorer)(ScoreContext(client, embedder, cfg, hookpoint, int(latent), seed, explanation,
                                             activating, negatives, cache, also))
        summary, records = result.summary, result.records
        model = result.model if result.model is not None else (client.name if client else None)
        mode, engine = result.mode, result.engine if result.engine is not None else engine_of(client)
        sid = uuid.uuid4().hex
        scores.append({**base, **{k: summary.get(k) for k in ("n", "n_failed", "balanced_accuracy", "precision",
                                                                "recall", "f1", "auroc", "accuracy", "correlation",
                                                                *INTERVAL_KEYS)},
                       "score_id": sid, "scorer": scorer, "model": model, "mode": mode, "engine": engine,
                       **({"explanation": None} if scorer in EXPLANATION_FREE else {}),
                       "decision_rule": summary.get("decision_rule"),
                       "accuracy_per_decile": json.dumps(summary.get("accuracy_per_decile", {})),
                       "correlation_per_quantile": json.dumps(summary.get("correlation_per_quantile", {}))})
        decisions += [{**r, "score_id": sid, "hookpoint": hookpoint, "latent": int(latent), "scorer": scorer}
                      for r in records]
    return scores, decisions


def _score_job(client, *, cfg: InterpretConfig, **kw) -> tuple[list[dict], list[dict]]:
    """score_latent as a lockstep job; nothing to do when only the intervention scorer is due."""
    return score_latent(client, cfg=cfg, **kw) if cfg.scorers else ([], [])


def explanation_dict(records: pd.DataFrame) -> dict[int, str]:
    """latent -> explanation of store.explanations() records; failed explanations (None) left out."""
    return {int(r.latent): r.explanation for r in records.itertuples() if present(r.explanation)}


def open_for_scoring(cfg: InterpretConfig, steering: bool = False
                     ) -> tuple[RunStore, list[int], pd.DataFrame, dict[int, str]]:
    """(store, chosen latents, their explanation records, latent -> current explanation) after
    checking the scorers; failed explanations (None) are left out of the dict. `steering`: the
    caller runs the intervention scorer (only `autointerp score` does)."""
    unknown = [s for s in cfg.scorers if s not in SCORERS]
    if unknown:
        raise AutointerpError(f"unknown scorers {unknown}: choose from {', '.join(SCORERS)}")
    check_kind(cfg)
    if cfg.kind != "input" and not steering:
        raise AutointerpError(f"--kind {cfg.kind} is scored only by `autointerp score`: validation runs on "
                              f"input explanations (drop --kind)")
    if INTERVENTION in cfg.scorers:
        if not steering:
            raise AutointerpError("the intervention scorer is not run here: every intervention score carries its "
                                  "own baselines (random explanation, random direction; results/interventions), "
                                  "so drop it from --scorers and use `autointerp score --scorers intervention`")
        InterventionConfig.from_interpret(cfg)  # one-line errors before any model loads
    store = RunStore(run_path(cfg.run))
    remove_stale_result_temp(store.run_dir)
    latents = select_latents(store, cfg)
    records = store.explanations(cfg.hookpoint, kind=cfg.kind)
    # a latent whose newest explanation failed is scored on its last good one (it keeps showing it)
    return store, latents, records, explanation_dict(store.current_explanations(cfg.hookpoint, kind=cfg.kind))


def scoring_models(cfg: InterpretConfig, client=None) -> tuple:
    """(LLM client or None when only embedding scores, cfg.embedder or None), loaded once."""
    needs_llm = any(SCORER_SPECS[s].needs_llm for s in cfg.scorers if s in SCORER_SPECS)
    client = client or (llm_client(cfg) if needs_llm else None)
    embedder = None
    if "embedding" in cfg.scorers or cfg.negatives == "hard":
        embedder = load_embedder(cfg.embedder)
    return client, embedder


def chunk_scorer(cfg: InterpretConfig, store: RunStore, expl: dict[int, str], client=None):
    """Load the models of cfg.scorers once; returns score(chunk, todo) -> the chunk's rows by
    result kind (scores, decisions, steered, steered_examples), nothing written. todo maps each
    latent to the scorers it still needs; expl holds the set's current explanations (the
    intervention scorer's random-explanation baseline draws from all of them)."""
    client, embedder = scoring_models(cfg, client)
    steer = InterventionScorer.for_run(cfg, client, store) if INTERVENTION in cfg.scorers else None

    def score(chunk: list[int], todo: dict[int, list[str]]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {"scores": [], "decisions": [], "steered": [], "steered_examples": []}
        # the context scorers of the whole chunk share backend calls (llm/lockstep.py)
        jobs = [functools.partial(_score_job, store=store, hookpoint=cfg.hookpoint, latent=x, explanation=expl.get(x),
                                  cfg=dataclasses.replace(cfg, scorers=[s for s in todo[x] if s != INTERVENTION]),
                                  embedder=embedder) for x in chunk]
        for latent, (s, d) in zip(chunk, run_lockstep(client, jobs)):
            if INTERVENTION in todo[latent]:
                row, targets, examples = steer.score_latent(latent, expl)
                s = s + [row]
                out["steered"] += targets
                out["steered_examples"] += examples
            out["scores"] += [{**r, "explanation_kind": cfg.kind} for r in s]  # kept apart from the other kind's
            out["decisions"] += d
        return out

    return score


def run_score(cfg: InterpretConfig, client=None) -> list[dict]:
    store, latents, records, expl = open_for_scoring(cfg, steering=True)
    # explanation-free scorers (intruder) alone score any latent, explained or not
    needs_explanation = any(s not in EXPLANATION_FREE for s in cfg.scorers)
    failed = [x for x in latents if x not in expl and x in set(records.latent.tolist())] if needs_explanation else []
    if failed:  # their failure is already recorded; scoring the rest keeps a long job going
        log.warning("skipping %d latents whose explanation failed: %s", len(failed), failed[:10])
        latents = [x for x in latents if x not in failed]
    missing = [x for x in latents if x not in expl] if needs_explanation else []
    if missing:
        raise AutointerpError(f"latents {missing[:10]} of {cfg.hookpoint} have no {cfg.kind} explanation: "
                              f"run `autointerp explain --kind {cfg.kind}` on them first")
    todo = {x: list(cfg.scorers) for x in latents}
    if not cfg.force:
        # a rerun runs only the scorers that have not yet scored the latent's current explanation
        # (explanation-free ones: that have not scored the latent at all)
        scored = store.scores(cfg.hookpoint, kind=cfg.kind)
        have = scored.groupby(["latent", "explanation"]).scorer.agg(set).to_dict() if len(scored) else {}
        judged = set(zip(scored.latent, scored.scorer)) if len(scored) else set()
        todo = {x: [s for s in cfg.scorers
                    if ((x, s) not in judged if s in EXPLANATION_FREE else s not in have.get((x, expl[x]), set()))]
                for x in latents}
        latents = [x for x in latents if todo[x]]
    rows: list[dict] = []
    n_failed = len(failed)  # latents that cannot be scored: failed explanations, too few examples
    with tqdm(total=len(latents), desc=f"score {cfg.hookpoint}", unit="latent") as bar:
        report_progress(0, len(latents), failed=n_failed)

        def write(unit: tuple, part: dict) -> None:
            nonlocal n_failed
            # decisions first: a score row is only visible once its decisions are in place
            append_results(store.run_dir, "decisions", part["decisions"])
            append_results(store.run_dir, "intervention_examples", part["steered_examples"])
            append_results(store.run_dir, "interventions", part["steered"])
            fault_point("score-between-writes")
            append_results(store.run_dir, "scores", part["scores"])
            fault_point("score-chunk-written")
            good = [r for r in part["scores"] if not r.get("error")]
            if good:
                record_milestone(store.run_dir, "first score", once=True, hookpoint=cfg.hookpoint,
                                 latent=int(good[0]["latent"]), scorer=good[0]["scorer"])
            rows.extend(part["scores"])
            n_failed += len({r["latent"] for r in part["scores"] if r.get("error")})
            bar.update(len(unit[0]))
            report_progress(bar.n, len(latents), failed=n_failed)

        units = [(chunk, {x: todo[x] for x in chunk}) for chunk in chunks(latents, cfg.chunk)]
        # only the models of scorers still due are loaded (a rerun may need no steering, no MiniLM)
        due = dataclasses.replace(cfg, scorers=[s for s in cfg.scorers if any(s in todo[x] for x in latents)])
        execute(due, units, score_work, write, expl, local={"client": client, "store": store})
    log.info("scored %d latents (%d could not be scored)", len(latents) - (n_failed - len(failed)),
             n_failed)
    compact_if_many(store.run_dir, ["decisions", "intervention_examples", "interventions", "scores"], cfg.compact_at)
    return rows


# -- the work executor.execute builds, here or once per Ray worker ---------------------------------

def explain_work(cfg: InterpretConfig, client=None, store: RunStore | None = None):
    """chunk of latents -> explanation records, for the driver to write."""
    return _explainer(cfg, client or llm_client(cfg), store or RunStore(run_path(cfg.run)))


def score_work(cfg: InterpretConfig, expl: dict[int, str], client=None, store: RunStore | None = None):
    """(chunk, latent -> scorers due) -> score rows, against the explanations the driver planned from."""
    return chunk_scorer(cfg, store or RunStore(run_path(cfg.run)), expl, client)
