"""Dataclass configs for every pipeline stage. The CLI builds its flags from these fields, so a
field's comment in `metadata["help"]` is also its --help text."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field

from autointerp.core.paths import data_dir

DEMO_HOOKPOINTS = ["resid_post.14", "resid_post.15", "resid_post.16", "mlp_out.15"]
# SAEs the demo trains and caches only for the adjacent-layer overlap study (MLP side of it)
DEMO_OVERLAP_HOOKPOINTS = ["mlp_out.14", "mlp_out.16"]
STUDIES = ("sampling", "coders", "overlap", "agreement")
# The CLI's command names (cli.COMMANDS maps each to its function and config): jobs launch these
# by name without importing the stages.
COMMAND_NAMES = ("train-sae", "cache", "demo", "explain", "score", "validate", "analyze", "export", "compact", "models", "runs")


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer's registration: how it runs and how its number reads. Adding a scorer is a module
    with a `run(ScoreContext) -> ScoreResult` function (autointerp/scorers/) and one entry below."""

    name: str
    runner: str  # "module:function" that runs.interpret.score_latent calls; "" for one with its own runner
    headline: tuple[str, ...] = ("auroc", "balanced_accuracy")  # the number it is judged by: the first present
    chance: float = 0.5  # what a score means nothing at
    score_range: tuple[float, float] = (0.0, 1.0)  # for filters and axes
    needs_llm: bool = True
    # judges the latent, not an explanation: its scores have no explanation and stay current
    # whichever explanation the latent shows
    explanation_free: bool = False


INTRUDER_CHOICES = 5  # windows per intruder prompt: 4 activating, 1 intruder
SCORER_SPECS = {s.name: s for s in (
    ScorerSpec("detection", "autointerp.score.classify:run_detection"),
    ScorerSpec("fuzzing", "autointerp.score.classify:run_fuzzing"),
    ScorerSpec("embedding", "autointerp.score.embedding:run", needs_llm=False),
    ScorerSpec("surprisal", "autointerp.score.surprisal:run"),
    ScorerSpec("simulation", "autointerp.score.simulation:run", headline=("correlation",), chance=0.0,
               score_range=(-1.0, 1.0)),
    ScorerSpec("intruder", "autointerp.score.intruder:run", headline=("accuracy",), chance=1 / INTRUDER_CHOICES,
               explanation_free=True),
    # steering the subject: run by runs.interpret.chunk_scorer through intervention/ (nats at KL 1)
    ScorerSpec("intervention", "", headline=("intervention_score",), chance=0.0, score_range=(-10.0, 10.0)),
)}
SCORERS = tuple(SCORER_SPECS)

# What a latent costs on 2 CPU cores, measured: (seconds per explanation, seconds to score one
# explanation with detection + fuzzing + embedding on the default test set), fitted to the demo
# job's studies with Qwen-1.5B (sampling: 24 explanations in 7.4 min; coders: 24 in 13.6 min, both
# with detection + embedding); SmolLM2 from the tests' runs; "other" assumes a Qwen-sized model.
# The study forms' and the launch forms' estimates read it.
COST_S = {"qwen1.5b": (5.0, 36.0), "smollm2": (1.5, 4.0), "other": (5.0, 36.0)}


def latent_cost_s(model: str, n_scorers: int) -> tuple[float, float]:
    """(explain, score) seconds per latent on 2 CPU cores for an explainer/scorer model."""
    per_explain, per_score = COST_S.get(model, COST_S["other"])
    return per_explain, per_score * max(1, n_scorers) / 3
EXPLANATION_FREE = tuple(s.name for s in SCORER_SPECS.values() if s.explanation_free)
# the model variant of the random-model baseline (`smollm2#random-init:0`) and its latent sets' suffix
RANDOM_INIT = "random-init"


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


def default_of(cls, name: str):
    """A config field's default: other configs (sampling, LLM client) take theirs from here, so
    each setting has one default."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not MISSING else f.default


# settings shared by several configs: one definition each (a Field object cannot be shared)
def _ray():
    return _help("spread the work over a Ray cluster: 'auto' (the cluster this machine belongs to) or the head's "
                 "HOST:PORT; needs the ray extra (pip install -e '.[ray]')", default="")


def _ray_workers():
    return _help("with --ray: at most this many workers, each loading its own models (0: one per GPU on a GPU "
                 "cluster, else one per node)", default=0)


@dataclass
class TrainConfig:
    model: str = _help("subject model: 'smollm2', a local HF folder, a .gguf file or a hub name", default="smollm2")
    corpus: str = _help("'wiki' or a .txt/.jsonl/.json file", default="wiki")
    hookpoints: list[str] = _help("hookpoints to train SAEs on", default_factory=lambda: list(DEMO_HOOKPOINTS))
    out_dir: str = _help("folder that receives one sae-lens SAE folder per hookpoint",
                         default_factory=lambda: str(data_dir() / "saes" / "smollm2"))
    n_latents: int = _help("latents per SAE", default=4096)
    k: int = _help("active latents per token (top-k)", default=32)
    tokens: int = _help("training tokens (activations are held in memory)", default=300_000)
    eval_tokens: int = _help("held-out tokens for FVU / L0 / dead-latent metrics", default=20_000)
    epochs: int = _help("passes over the training tokens", default=3)
    batch_size: int = _help("activations per optimiser step", default=1024)
    lr: float = _help("Adam learning rate", default=2e-3)
    dtype: str = _help("subject dtype while collecting activations: auto (measured on this machine: bfloat16 on a "
                       "GPU or where bfloat16 runs faster than float32, else float32), bfloat16, float16, float32",
                       default="auto")
    autocast: bool = _help("train in bfloat16 autocast when --dtype resolves to bfloat16 (so never on CPUs where "
                           "bfloat16 is slow)", default=True)
    dead_feature_window: int = _help("steps without firing before a latent counts as dead (aux-k loss)", default=50)
    ctx_len: int = _help("corpus tokens per context (a BOS token is prepended)", default=64)
    outlier_factor: float = _help("drop training tokens whose norm exceeds this x the median (attention sinks)",
                                  default=10.0)
    seed: int = _help("random seed", default=0)


@dataclass
class CacheConfig:
    run: str = _help("run folder (a bare name goes under data/runs/)", default="demo")
    model: str = _help("subject model: 'smollm2', a local HF folder, a .gguf file or a hub name", default="smollm2")
    corpus: str = _help("'wiki' or a .txt/.jsonl/.json file", default="wiki")
    coders: list[str] = _help("coders: sae:FOLDER[@HP], sparsify:FOLDER@HP, neurons@HP, topk:K@HP, random:N:K@HP",
                              default_factory=list)
    tokens: int = _help("tokens to cache", default=500_000)
    ctx_len: int = _help("corpus tokens per context (a BOS token is prepended and never cached)", default=64)
    batch_contexts: int = _help("contexts per forward pass", default=64)
    part_contexts: int = _help("contexts per Parquet part (the unit of resume, and of publishing early)", default=1024)
    publish_after_s: float = _help("publish the run (browsable in the app) once this many seconds of caching have "
                                   "passed, then keep caching and grow it in place (-1: publish when complete)",
                                   default=-1.0)
    stop_when_browsable: bool = _help("return once the run is published (browsable), leaving the rest for a later "
                                      "call with the same settings, which grows it", default=False)
    seed: int = _help("seed of the corpus shuffle", default=0)
    histogram_bins: int = _help("bins of each latent's activation histogram", default=20)
    device: str = _help("where the subject and coders run: auto (a CUDA GPU when torch sees one), cpu, cuda, "
                        "cuda:N", default="auto")
    dtype: str = _help("subject dtype: auto (measured on this machine: bfloat16 on a GPU or where bfloat16 runs "
                       "faster than float32, e.g. CPUs with AMX; float32 on others, where bfloat16 is up to 30x "
                       "slower), bfloat16, float16, float32", default="auto")
    coder_dtype: str = _help("dtype SAEs encode in: auto as for --dtype", default="auto")
    ray: str = _ray()
    ray_workers: int = _ray_workers()


@dataclass
class DemoConfig:
    run: str = _help("name of the demo run under data/runs/", default="demo")
    tokens: int = _help("tokens to cache (the demo's full size)", default=500_000)
    first_budget_s: float = _help("seconds of caching before the run is first published (browsable): on a slow CPU "
                                  "that is a part of --tokens and the rest is cached after, growing the same run in "
                                  "place (-1: publish only the full size)", default=300.0)
    part_contexts: int = _help("contexts (of 64 tokens) per cache part: the unit of resume and of the first size",
                               default=128)
    stage: str = _help("what to build: all (everything, then launch the explain/score job), first (until the run is "
                       "browsable), grow (the rest, then launch the explain/score job)", default="all")
    background: bool = _help("launch the build as a background job (first size, first scores, growth) and return at "
                             "once: what `make app` does before serving the app", default=False)
    first_scores: int = _help("with --background: latents of the main residual set explained and scored as soon as "
                              "the run is browsable, before it grows (0: none)", default=2)
    train_tokens: int = _help("tokens each demo SAE trains on", default=300_000)
    epochs: int = _help("passes over the training tokens", default=3)
    n_latents: int = _help("latents per SAE", default=4096)
    k: int = _help("active latents per token (also the top-k neuron baseline's k)", default=32)
    hookpoints: list[str] = _help("SAE hookpoints", default_factory=lambda: list(DEMO_HOOKPOINTS))
    neuron_baseline: str = _help("hookpoint of the top-k neuron baseline ('' for none)", default="mlp_neurons.15")
    interpret: int = _help("random latents per latent set to explain and score in a background job after "
                           "caching (0: none)", default=6)
    interpret_model: str = _help("explainer/scorer of that job", default="qwen1.5b")
    validate: int = _help("latents of the first residual-stream set that the job explains, scores and validates "
                          "(a verdict needs at least 10; 0: no validation)", default=10)
    interpret_scorers: list[str] = _help("scorers of that job",
                                         default_factory=lambda: ["detection", "fuzzing", "embedding"])
    intervention: bool = _help("that job also intervention-scores the first residual-stream set's latents "
                               "(steering them; last, after validation)", default=True)
    overlap_hookpoints: list[str] = _help("more SAE hookpoints trained and cached for the adjacent-layer overlap "
                                          "study only (not explained by the job)",
                                          default_factory=lambda: list(DEMO_OVERLAP_HOOKPOINTS))
    neuron_threshold: float = _help("the raw-neuron set of the SAE-vs-neurons study (the neuron baseline's layer, "
                                    "positive part) keeps values above this: at 0 the gated MLP units fire in every "
                                    "window and nothing can be scored; 0.4 gives about the SAEs' L0 (-1: no such set)",
                                    default=0.4)
    random_baseline: bool = _help("also cache random directions (n_latents, k) at the neuron baseline's mlp_out "
                                  "hookpoint, the floor of that study", default=True)
    random_init_baseline: bool = _help("also train the main residual set's SAE (resid_post.15) with the same recipe "
                                       "on a re-initialised copy of SmolLM2 and cache it as its own latent set "
                                       "(<set>-random-init), the random-model baseline the coders study shows beside "
                                       "the trained SAE", default=False)
    study_scorers: list[str] = _help("scorers of the job's sampling and coders studies (the two validated on the "
                                     "demo that cost least; fuzzing would double the studies' time)",
                                     default_factory=lambda: ["detection", "embedding"])
    studies: int = _help("latents per condition in the job's small studies (sampling, coders; overlap explains "
                         "this many per adjacent pair; 0: no studies)", default=6)
    dtype: str = _help("dtype of every model the demo runs (subject, SAEs, explainer/scorer): auto (measured on "
                       "this machine), bfloat16, float16, float32", default="auto")


@dataclass
class InterpretConfig:
    run: str = _help("run name or folder", default="demo")
    hookpoint: str = _help("latent set to work on", default="resid_post.15")
    latents: list[int] = _help("latent ids (or use --top-frequent / --random)", default_factory=list)
    top_frequent: int = _help("take the N most frequent latents", default=0)
    random: int = _help("take N random latents active on enough tokens to explain and score "
                        "(n_explain + 10 x test_per_quantile)", default=0)
    backend: str = _help("LLM backend: transformers (CPU default), vllm (offline engine), openai (a server)",
                         default="transformers")
    base_url: str = _help("openai backend: the server's base URL, e.g. http://127.0.0.1:8000/v1", default="")
    api_key: str = _help("openai backend: API key (default $OPENAI_API_KEY)", default="")
    timeout_s: float = _help("openai backend: seconds per request before retrying", default=60.0)
    max_retries: int = _help("openai backend: retries with exponential backoff", default=3)
    model: str = _help("explainer/scorer model: 'qwen1.5b' (the only small model measured to score meaningfully "
                       "on CPU), 'smollm2' (fast, for tests), a local folder or .gguf file", default="qwen1.5b")
    strategy: str = _help("explanation examples: top, random, quantiles or mix", default="top")
    n_explain: int = _help("examples shown to the explainer", default=20)
    threshold: float = _help("highlight tokens above this fraction of the example's max activation", default=0.3)
    show_activations: bool = _help("also show activation values to the explainer", default=False)
    cot: bool = _help("let the explainer think step by step first", default=False)
    explainer: str = _help("default (activating examples) or contrastive (also shown similar windows where the latent "
                           "is silent: embedding-nearest under --embedder, and asked what tells them apart)",
                           default="default")
    scorers: list[str] = _help("scorers to run: detection fuzzing embedding surprisal simulation intruder (needs no "
                               "explanation) intervention",
                               default_factory=lambda: ["detection", "fuzzing", "embedding"])
    mode: str = _help("detection/fuzzing answers: logprob (probabilities) or generate (parsed text)",
                      default="logprob")
    per_prompt: int = _help("examples per detection/fuzzing prompt", default=5)
    calibrate: bool = _help("logprob detection/fuzzing: score each example by logit P(Yes | explanation) - "
                            "logit P(Yes | a neutral explanation) on the same prompts", default=True)
    test_per_quantile: int = _help("activating test examples per decile; with as many --n-negative, one latent's "
                                   "AUROC has a 95%% interval of about +/-0.25 at 1 (10+10 windows), +/-0.17 at 2, "
                                   "+/-0.14 at 3, +/-0.11 at 5 (DeLong, simulated at AUROC 0.66; docs/benchmarks.md)",
                                   default=2)
    n_negative: int = _help("non-activating test examples (see --test-per-quantile for the interval each size "
                            "gives)", default=20)
    negatives: str = _help("non-activating examples: random, hard (similar under --embedder) or neighbours (top "
                           "windows of the latents with the nearest decoder directions)", default="random")
    embedder: str = _help("sentence embedder of the embedding scorer and hard negatives: minilm "
                          "(all-MiniLM-L6-v2), mpnet (all-mpnet-base-v2, assembled from its PyPI parts on first "
                          "use) or a sentence-transformers folder; docs/benchmarks.md compares them",
                          default="minilm")
    min_examples: int = _help("latents with fewer activating windows are recorded as failures", default=5)
    batch_size: int = _help("prompts per forward pass (openai backend: requests in flight at once)", default=8)
    device: str = _help("transformers backend: auto (a CUDA GPU when torch sees one), cpu, cuda, cuda:N",
                        default="auto")
    dtype: str = _help("transformers backend: auto (measured on this machine: bfloat16 on a GPU or where bfloat16 "
                       "runs faster than float32, else float32), bfloat16, float16, float32", default="auto")
    chunk: int = _help("latents per written result part (the unit of resume)", default=4)
    compact_at: int = _help("after the run, merge a result kind's parts once there are this many (a long "
                            "campaign's thousands of small parts slow every query); 0: never", default=256)
    target_kls: list[float] = _help("intervention: KL(clean || steered) of the next token, in nats, that the "
                                    "steering strength is searched for; the score at the target nearest 1 is the "
                                    "headline", default_factory=lambda: [0.1, 0.3, 1.0, 3.0])
    kl_rtol: float = _help("intervention: a target KL counts as reached within this relative tolerance", default=0.1)
    n_intervention_prompts: int = _help("intervention: corpus prompts steered per latent (the same for every latent)",
                                        default=8)
    prompt_tokens: int = _help("intervention: tokens per prompt (BOS included), from the start of random contexts",
                               default=32)
    new_tokens: int = _help("intervention: greedy tokens generated after each prompt, clean and steered", default=8)
    subject_dtype: str = _help("intervention: dtype of the subject model while steering (float32 keeps small KL "
                               "steps smooth)", default="float32")
    kind: str = _help("explanation kind: 'input' (from activating examples) or 'output' (explain: the explainer "
                      "reads clean vs steered continuations at the --target-kls value nearest 1 that is reached; "
                      "score: scores the output explanations, stored apart from input ones)", default="input")
    force: bool = _help("redo latents that already have results", default=False)
    seed: int = _help("random seed", default=0)
    ray: str = _ray()
    ray_workers: int = _ray_workers()


@dataclass
class ExportConfig:
    run: str = _help("run name or folder", default="demo")
    out: str = _help("output folder ('' = data/exports/<run>)", default="")
    formats: list[str] = _help("figure formats: png svg pdf", default_factory=lambda: ["png", "svg", "pdf"])
    hookpoint: str = _help("only this latent set ('' = every set of the run)", default="")
    top_latents: int = _help("activation histograms of the N most frequent latents of each set", default=3)


@dataclass
class CompactConfig:
    """`autointerp compact`: merge a run's result parts (a long campaign leaves thousands)."""

    run: str = _help("run name or folder", default="demo")
    grace_s: float = _help("seconds the replaced parts stay for readers that listed them (the app); they are "
                           "deleted by the next compact after that; 0 deletes them at once", default=60.0)


@dataclass
class AnalyzeConfig(InterpretConfig):
    """`autointerp analyze STUDY`: the explain/score settings of InterpretConfig plus each study's own."""

    random: int = _help("latents per condition: N random latents active enough to explain and score", default=8)
    strategies: list[str] = _help("sampling study: the explanation sampling strategies compared",
                                  default_factory=lambda: ["top", "random", "quantiles", "mix"])
    sets: list[str] = _help("coders study: the latent sets compared, first is the reference (none given: every "
                            "set of the run, SAEs first)", default_factory=list)
    pairs: list[str] = _help("overlap study: latent-set pairs A:B (none given: every pair of sets of one coder "
                             "kind at adjacent layers of one site)", default_factory=list)
    basis: list[str] = _help("overlap study: match on 'decoder' directions (every latent) and/or "
                             "'explanation' embeddings (explains --random latents of A and their decoder partners "
                             "in B where they have no explanation yet)",
                             default_factory=lambda: ["decoder", "explanation"])
    scorer: str = _help("the score a study's summary and figure compare (any scorer it ran)", default="detection")
