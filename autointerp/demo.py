"""`autointerp demo`: the embedded end-to-end demo on real models, idempotent.

Steps: convert SmolLM2-135M-Instruct from its shipped GGUF (once) -> train the demo SAEs (skipped
when their folders exist) -> cache them plus a top-k neuron baseline over the Wikipedia corpus
(resumes or returns at once when complete) -> launch a background job that explains and scores
a few random latents of every latent set (skipped when they have scores or the job is running),
so the app is browsable at once and its score views fill in over minutes.

The cache is published (browsable) after `first_budget_s` of caching, whatever the CPU's speed,
and then grows in place to the full size. `--background` (what `make app` runs before serving the
app) launches all of it as one job, "demo: build": the first size (`--stage first`), the first
scores of the main set (`first_scores` latents, so a scored latent appears before the growth),
then the growth (`--stage grow`), which ends by launching the explain/score job.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dataclasses

from autointerp import jobs
from autointerp.config import RANDOM_INIT, AnalyzeConfig, CacheConfig, DemoConfig, InterpretConfig, TrainConfig
from autointerp.core.errors import AutointerpError
from autointerp.core.paths import data_dir
from autointerp.store import RunStore, list_runs, run_path

log = logging.getLogger(__name__)


def demo_sae_dir(cfg: DemoConfig) -> Path:
    return data_dir() / "saes" / f"smollm2-{cfg.n_latents}x{cfg.k}"


RANDOM_INIT_SEED = 0


def random_init_sae_dir(cfg: DemoConfig) -> Path:
    return data_dir() / "saes" / f"smollm2-{RANDOM_INIT}-{cfg.n_latents}x{cfg.k}"


def random_init_coders(cfg: DemoConfig, subject) -> list[str]:
    """With --random-init-baseline: the main set's SAE trained with the demo's recipe on a
    re-initialised copy of the subject (trained once), as a coder reading that copy."""
    main = main_set(cfg)
    if not cfg.random_init_baseline or main is None:
        return []
    from autointerp.models.subject import random_init_spec
    from autointerp.models.train import train_saes

    out = random_init_sae_dir(cfg)
    # the copy is made (spec `smollm2#random-init:0`, through the dtype rule) only when the SAE is missing
    model = random_init_spec(subject.name, RANDOM_INIT_SEED)
    m = train_saes(TrainConfig(model=model, hookpoints=[main], out_dir=str(out), n_latents=cfg.n_latents, k=cfg.k,
                               tokens=cfg.train_tokens, epochs=cfg.epochs, dtype=cfg.dtype))[main]
    log.info("  %s on %s: FVU %.3f  L0 %.1f  dead %.1f%%", main, model, m["fvu"], m["l0"], m["dead_pct"])
    return [f"sae:{out / main}#{RANDOM_INIT}:{RANDOM_INIT_SEED}"]


STAGES = ("all", "first", "grow")
DEMO_BUILD_TITLE = "demo: build"


def run_demo(cfg: DemoConfig) -> Path:
    if cfg.stage not in STAGES:
        raise AutointerpError(f"unknown --stage {cfg.stage!r}: choose one of {', '.join(STAGES)}")
    if cfg.background:
        launch_demo_build(cfg)
        return run_path(cfg.run)
    from autointerp.runs.cache import cache_run
    from autointerp.models.subject import load_subject
    from autointerp.models.train import train_saes

    t0 = time.time()
    log.info("[1/3] subject model SmolLM2-135M-Instruct")
    subject = load_subject("smollm2", cfg.dtype)
    log.info("  dtype %s (--dtype %s)", str(subject.dtype).removeprefix("torch."), cfg.dtype)
    hookpoints = list(dict.fromkeys(cfg.hookpoints + cfg.overlap_hookpoints))
    log.info("[2/3] demo SAEs on %s", ", ".join(hookpoints))
    sae_dir = demo_sae_dir(cfg)
    metrics = train_saes(TrainConfig(hookpoints=hookpoints, out_dir=str(sae_dir), n_latents=cfg.n_latents,
                                     k=cfg.k, tokens=cfg.train_tokens, epochs=cfg.epochs, dtype=cfg.dtype),
                         subject=subject)
    for hp, m in metrics.items():
        log.info("  %s: FVU %.3f  L0 %.1f  dead %.1f%%", hp, m["fvu"], m["l0"], m["dead_pct"])
    log.info("[3/3] activation cache over %d tokens", cfg.tokens)
    coders = [f"sae:{sae_dir / hp}" for hp in hookpoints] + random_init_coders(cfg, subject) + baseline_coders(cfg)
    run_dir = cache_run(CacheConfig(run=cfg.run, model="smollm2", coders=coders, tokens=cfg.tokens, dtype=cfg.dtype,
                                    coder_dtype=cfg.dtype, part_contexts=cfg.part_contexts,
                                    publish_after_s=cfg.first_budget_s if cfg.stage != "grow" else -1.0,
                                    stop_when_browsable=cfg.stage == "first"),
                        subject=subject)
    if cfg.stage == "first":
        log.info("demo browsable in %.0f s: %s", time.time() - t0, run_dir)
        return run_dir
    log.info("demo ready in %.0f s: %s", time.time() - t0, run_dir)
    job = launch_demo_job(cfg, RunStore(run_dir))
    if job is not None:
        log.info("explaining and scoring %d latents per set in the background: job %s (see the app's Jobs page, "
                 "log %s)", cfg.interpret, job.id, job.log_path)
    return run_dir


def baseline_coders(cfg: DemoConfig) -> list[str]:
    """The neuron baseline's layer seen as latents other than an SAE's: top-k neurons (k = the
    SAEs' L0), raw neurons (positive part above cfg.neuron_threshold) and random directions at
    the layer's mlp_out (the SAE-vs-neurons study compares them with the mlp_out SAE)."""
    if not cfg.neuron_baseline:
        return []
    layer = cfg.neuron_baseline.rpartition(".")[2]
    out = [f"topk:{cfg.k}@{cfg.neuron_baseline}"]
    if cfg.neuron_threshold >= 0:
        out.append(f"neurons:{cfg.neuron_threshold:g}@{cfg.neuron_baseline}")
    if cfg.random_baseline:
        out.append(f"random:{cfg.n_latents}:{cfg.k}@mlp_out.{layer}")
    return out


def coder_study_sets(cfg: DemoConfig, store: RunStore) -> list[str]:
    """The SAE-vs-neurons study's sets: the SAE at the baseline layer's mlp_out first, then the
    neuron and random sets of baseline_coders, then (--random-init-baseline) the main residual
    SAE and its random-model twin, those the run has."""
    wanted: list[str] = []
    if cfg.neuron_baseline:
        layer = cfg.neuron_baseline.rpartition(".")[2]
        wanted = [f"mlp_out.{layer}", f"{cfg.neuron_baseline}-neurons", f"{cfg.neuron_baseline}-topk{cfg.k}",
                  f"mlp_out.{layer}-random"]
    main = main_set(cfg)
    if cfg.random_init_baseline and main is not None:
        wanted += [main, f"{main}-{RANDOM_INIT}"]
    have = [s for s in wanted if s in store.hookpoints()]
    return have if len(have) >= 2 and have[0] == wanted[0] else []


DEMO_JOB_TITLE = "demo: explain + score"


def main_set(cfg: DemoConfig) -> str | None:
    """The residual-stream SAE set the demo validates: the middle layer's (.15) when it has one."""
    residual = sorted((h for h in cfg.hookpoints if h.startswith("resid_post.")), key=lambda s: (".15" not in s, s))
    return residual[0] if residual else None


def build_steps(cfg: DemoConfig) -> list[tuple[str, list[str]]]:
    """The build job's CLI steps: the first size, the main set's first scores, the growth."""
    def demo(stage: str) -> tuple[str, list[str]]:
        return "demo", jobs.config_args(dataclasses.replace(cfg, background=False, stage=stage))

    steps = [demo("first")]
    main = main_set(cfg)
    if cfg.interpret > 0 and cfg.first_scores > 0 and main is not None:
        args = jobs.interpret_args(InterpretConfig(run=cfg.run, hookpoint=main, random=cfg.first_scores,
                                                   model=cfg.interpret_model, dtype=cfg.dtype, chunk=1,
                                                   scorers=list(cfg.interpret_scorers)))
        steps += [("explain", args), ("score", args)]
    return steps + [demo("grow")]


def launch_demo_build(cfg: DemoConfig) -> jobs.Job | None:
    """Launch the demo's build as a background job and return at once (what `make app` does before
    it serves the app). A complete demo run only gets its explain/score job (when some set still
    lacks scores); nothing is launched while a build job runs."""
    running = [j for j in jobs.list_jobs() if j.title == DEMO_BUILD_TITLE and j.state == "running"]
    if running:
        log.info("the demo build job %s is running: follow it on the app's Jobs page", running[0].id)
        return None
    run = run_path(cfg.run)
    if next((r for r in list_runs(run.parent) if Path(r["path"]) == run), {}).get("status") == "complete":
        job = launch_demo_job(dataclasses.replace(cfg, background=False), RunStore(run))
        if job is not None:
            log.info("demo run complete; explaining and scoring in the background: job %s", job.id)
        return job
    job = jobs.launch_steps(build_steps(cfg), DEMO_BUILD_TITLE)
    log.info("building the demo in the background: job %s (the app's Jobs page and Overview show its progress; "
             "log %s)", job.id, job.log_path)
    return job


def launch_demo_job(cfg: DemoConfig, store: RunStore) -> jobs.Job | None:
    """One job: explain then score `cfg.interpret` random latents of each set, the SAE sets of
    the middle layer first. None when disabled, already running, or every set has scores."""
    if cfg.interpret <= 0:
        return None
    if any(j.title == DEMO_JOB_TITLE and j.state == "running" for j in jobs.list_jobs()):
        return None
    steps = demo_steps(cfg, store)
    return jobs.launch_steps(steps, DEMO_JOB_TITLE) if steps else None


def demo_steps(cfg: DemoConfig, store: RunStore) -> list[tuple[str, list[str]]]:
    """The demo job's CLI steps, cheapest figure first:
    1. the overlap study's decoder match (seconds, no LLM), when no overlap study exists;
    2. explain and score every main set not scored yet, .15 sets first;
    3. validate the first residual-stream set (cfg.validate latents, explained and scored in step 2)
       and intervention-score it;
    4. the small studies: sampling strategies, SAE vs neurons (on the coders run), overlap with
       explanations. A job stops at its first failing step, so what the app already relies on
       (scores, validity) comes before the studies."""
    # sets cached only for a study are explained by that study, not one by one here
    studied = {*cfg.overlap_hookpoints, f"{cfg.neuron_baseline}-neurons",
               f"mlp_out.{cfg.neuron_baseline.rpartition('.')[2]}-random"}
    candidates = sorted((s for s in store.hookpoints() if s not in studied), key=lambda s: (".15" not in s, s))
    first_residual = next((s for s in candidates if s.startswith("resid_post.")), None)

    def wanted(s: str) -> int:
        # the validated set is explained and scored on enough latents for a validity verdict
        return max(cfg.interpret, cfg.validate) if s == first_residual and cfg.validate > 0 else cfg.interpret

    # a set is done once that many of its latents are scored or failed to explain (the build's
    # first scores are only a start on the main set)
    scores, expl = store.scores(), store.explanations()
    failed = expl[expl.explanation.isna()] if len(expl) else expl
    done = {s: len(set(scores.latent[scores.hookpoint == s]) | set(failed.latent[failed.hookpoint == s]))
            for s in candidates}
    sets = [s for s in candidates if done[s] < wanted(s)]
    main_set = first_residual if first_residual in sets else None

    def args(s: str, scorers: list[str] | None = None) -> list[str]:
        n = wanted(s)
        return jobs.interpret_args(InterpretConfig(run=cfg.run, hookpoint=s, random=n,
                                                   model=cfg.interpret_model, dtype=cfg.dtype,
                                                   scorers=list(scorers or cfg.interpret_scorers)))

    def analyze(study: str, **kw) -> tuple[str, list[str]]:
        acfg = AnalyzeConfig(run=cfg.run, random=cfg.studies, model=cfg.interpret_model, dtype=cfg.dtype, **kw)
        return "analyze", [study, *jobs.config_args(acfg)]

    studies = cfg.studies >= 3 and store.study_launches("overlap_summary").empty
    steps: list[tuple[str, list[str]]] = []
    if studies:
        steps.append(analyze("overlap", basis=["decoder"]))
    for s in sets:
        steps += [("explain", args(s)), ("score", args(s))]
    # One validation (true vs random vs neutral explanation on the same latents) on the main
    # SAE set, so the app can say whether its scorers measure anything on this run.
    if main_set is not None and cfg.validate > 0:
        steps.append(("validate", args(main_set)))
    # The output side (the Latent page's steering table, the Scores page's Fig. 4) for the same latents.
    if main_set is not None and cfg.intervention:
        steps.append(("score", args(main_set, ["intervention"])))
    if studies:
        residual = [s for s in sorted(store.hookpoints(), key=lambda s: (".15" not in s, s))
                    if s.startswith("resid_post.")]
        if residual:  # the middle residual SAE, whether or not this job scores it
            steps.append(analyze("sampling", hookpoint=residual[0], scorers=list(cfg.study_scorers)))
        if coder_study_sets(cfg, store):
            steps.append(analyze("coders", sets=coder_study_sets(cfg, store), scorers=list(cfg.study_scorers)))
        steps.append(analyze("overlap"))
    return steps
