"""The run store: the only module that writes SQL.

A run is a folder of files (see docs/storage.md); DuckDB queries them in-process through views, so
the app reads while jobs write. Writers put each file under a temporary name and rename it into
place, so readers never see half a file.

  run.json                          manifest: model, corpus, coders, n_tokens, status
  tokens.parquet                    (doc_id, pos, token_id), pos 0 is the BOS token
  tokens.npy                        the same as an int32 [n_contexts, 1 + ctx_len] matrix, memory-mapped
  token_strings.parquet             (token_id, token) for every token id in the run
  acts/<set>/parts/part-NNNNN.parquet   streaming cache output, one per part of contexts
  acts/<set>/acts.parquet           (latent, doc_id, pos, value) sorted by latent, value desc
  acts/<set>/latents.parquet        per latent: count, frequency, max, mean, histogram
  progress/part-NNNNN.done          a part whose files for every set are all in place

A latent set ("hookpoint" in the API) is one coder's latents at one hookpoint; its name is the
hookpoint for SAEs and `<hookpoint>-<kind>` for baselines.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.core.atomic import remove_stale_temp, tmp_prefix
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point
from autointerp.core.paths import data_dir
from autointerp.config import EXPLANATION_FREE

log = logging.getLogger(__name__)

ACT_SCHEMA = pa.schema([("latent", pa.int32()), ("doc_id", pa.int32()), ("pos", pa.int16()),
                        ("value", pa.float32())])
TOKENS_NPY = "tokens.npy"
ROW_GROUP_ROWS = 100_000  # small row groups: a latent's rows span few groups, zone maps skip the rest
LATENT_SORT_COLUMNS = ("latent", "count", "frequency", "max_act", "mean_act")


# ---------------------------------------------------------------------------------------------
# writing


def write_parquet_atomic(table: pa.Table, path: Path, row_group_size: int = ROW_GROUP_ROWS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(), suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        fault_point("mid-write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_OPEN_CONNECTIONS: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _close_connections() -> None:
    """Close long-lived connections before interpreter shutdown (else DuckDB's bindings print
    reference-leak warnings at exit)."""
    for con in list(_OPEN_CONNECTIONS):
        con.close()


def _connect(memory_limit: str = "2GB", temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": 2})
    _OPEN_CONNECTIONS.add(con)
    con.execute("SET parquet_metadata_cache = true")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    return con


CONTEXTS_KEY = "autointerp_contexts"  # Parquet metadata of acts/latents files: the contexts they cover


def covered_contexts(path: Path) -> int | None:
    """The contexts a set's acts.parquet or latents.parquet covers (None: no file, or one written
    before files recorded it)."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        return None
    value = meta.get(CONTEXTS_KEY.encode())
    return int(value) if value is not None else None


def publish_latent_set(run_dir: Path, name: str, n_latents: int, n_contexts: int, ctx_len: int,
                       spans: dict[int, tuple[int, int]], bins: int = 20, memory_limit: str = "2GB") -> None:
    """Make a set's sorted acts.parquet and latents.parquet cover contexts [0, n_contexts): the rows
    it already has plus those of its parts (spans: part -> its contexts [lo, hi)) up to there, sorted
    by (latent, value desc) in one out-of-core DuckDB sort, so peak RAM does not grow with the run.
    Idempotent: each file records the contexts it covers. Parts merged are removed."""
    set_dir = run_dir / "acts" / name
    acts = set_dir / "acts.parquet"
    have = covered_contexts(acts)
    if have is None and acts.exists():  # a set finalised before files recorded their coverage
        have = int(json.loads((run_dir / "run.json").read_text())["n_contexts"])
    have = have or 0
    if have > n_contexts:
        raise AutointerpError(f"{acts} covers {have} contexts, more than the {n_contexts} being published: delete "
                              f"the run folder and cache it again")
    parts_dir = set_dir / "parts"
    if have < n_contexts:
        needed = [p for p, (lo, hi) in spans.items() if lo < n_contexts and hi > have]
        missing = [p for p in needed if not (parts_dir / f"part-{p:05d}.parquet").exists()]
        if missing:
            raise AutointerpError(f"{parts_dir} lacks parts {missing[:5]} of contexts it must publish: delete the "
                                  f"progress/part-*.done markers of those parts and run the cache again")
        files = [str(parts_dir / f"part-{p:05d}.parquet") for p in needed]
        old = (f"SELECT latent, doc_id, pos, value FROM read_parquet('{acts}') WHERE doc_id < {have} UNION ALL "
               if have else "")
        con = _connect(memory_limit, temp_dir=run_dir / ".duckdb-tmp")
        try:
            tmp = set_dir / f"{tmp_prefix()}acts.parquet"
            con.execute(
                f"COPY ({old}SELECT latent, doc_id, pos, value FROM read_parquet({files}) "
                f"WHERE doc_id >= {have} AND doc_id < {n_contexts} "
                f"ORDER BY latent, value DESC, doc_id, pos) TO '{tmp}' "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
                f"KV_METADATA {{{CONTEXTS_KEY}: '{n_contexts}'}})")
            fault_point("mid-write")
            os.replace(tmp, acts)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            con.close()
    if covered_contexts(set_dir / "latents.parquet") != n_contexts:
        write_latent_stats(set_dir, n_latents, n_contexts * ctx_len, bins, memory_limit, n_contexts)
    for p, (lo, hi) in spans.items():  # merged: no longer needed
        if hi <= n_contexts:
            (parts_dir / f"part-{p:05d}.parquet").unlink(missing_ok=True)


def write_latent_stats(set_dir: Path, n_latents: int, n_tokens: int, bins: int = 20,
                       memory_limit: str = "2GB", n_contexts: int | None = None) -> None:
    """latents.parquet from a sorted acts.parquet: one row per latent id (silent ones included)
    with count, frequency, max/min/mean and a histogram of its activations."""
    acts = str(set_dir / "acts.parquet")
    con = _connect(memory_limit, temp_dir=set_dir.parent.parent / ".duckdb-tmp")
    try:
        stats = con.execute(f"""
            WITH s AS (SELECT latent, count(*) AS count, max(value) AS max_act, min(value) AS min_act,
                              avg(value) AS mean_act FROM read_parquet('{acts}') GROUP BY latent)
            SELECT l.latent::INTEGER AS latent, coalesce(s.count, 0)::BIGINT AS count,
                   coalesce(s.count, 0) / {n_tokens}::DOUBLE AS frequency,
                   coalesce(s.max_act, 0)::FLOAT AS max_act, coalesce(s.min_act, 0)::FLOAT AS min_act,
                   coalesce(s.mean_act, 0)::FLOAT AS mean_act
            FROM range({n_latents}) l(latent) LEFT JOIN s USING (latent) ORDER BY latent""").df()
        hist = con.execute(f"""
            WITH s AS (SELECT latent, min(least(value, 0)) AS lo, max(value) AS hi
                       FROM read_parquet('{acts}') GROUP BY latent)
            SELECT a.latent, least(floor((a.value - s.lo) / nullif(s.hi - s.lo, 0) * {bins}), {bins - 1})::INTEGER
                   AS bin, count(*) AS n
            FROM read_parquet('{acts}') a JOIN s USING (latent) GROUP BY ALL""").df()
    finally:
        con.close()
    counts = np.zeros((n_latents, bins), dtype=np.int64)
    if len(hist):
        b = hist["bin"].fillna(0).astype(int).to_numpy()
        counts[hist["latent"].to_numpy(), b] = hist["n"].to_numpy()
    stats["hist_lo"] = np.minimum(stats["min_act"].to_numpy(), 0).astype(np.float32)
    stats["hist_hi"] = stats["max_act"].astype(np.float32)
    stats["histogram"] = list(counts)
    table = pa.Table.from_pandas(stats, preserve_index=False)
    if n_contexts is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CONTEXTS_KEY: str(n_contexts)})
    write_parquet_atomic(table, set_dir / "latents.parquet")


# ---------------------------------------------------------------------------------------------
# reading


def latent_seed(seed: int, hookpoint: str, latent: int) -> int:
    """A seed of its own for each (seed, latent set, latent), the same in every process (Python's
    hash() of a string is not), so latents are not all tested on the same windows or layouts."""
    return int(np.random.SeedSequence([int(seed) % 2**32, zlib.crc32(hookpoint.encode()), int(latent)])
               .generate_state(1)[0])


# The subject's special tokens (the EOS that joins documents, or control tokens the corpus text
# itself contained) are shown as this one neutral marker, in prompts and in the app alike: pasted
# as `<|im_end|>`, a ChatML scorer reads its own end of turn.
SPECIAL_TOKEN_MARK = "⟨sep⟩"


@dataclass
class Example:
    """A window of tokens with one latent's activation on each token."""

    doc_id: int
    start: int  # position of the window's first token in its context
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    quantile: int | None = None  # 1 = lowest slice of activating windows, for quantile sampling

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0


def run_path(run: str) -> Path:
    """A bare run name lives under data/runs/; anything with a slash is a path."""
    return Path(run) if ("/" in run or run.startswith(".")) else data_dir() / "runs" / run


def list_runs(root: Path | None = None) -> list[dict]:
    root = root or data_dir() / "runs"
    out = []
    for manifest in sorted(root.glob("*/run.json")):
        try:
            info = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            log.warning("skipping %s: run.json is not valid JSON", manifest.parent)
            continue
        info["path"] = str(manifest.parent)
        out.append(info)
    return out


# ---------------------------------------------------------------------------------------------
# results: explanations, scores and per-example decisions, append-only parts; latest row wins

RESULT_SCHEMAS = {
    "explanations": pa.schema([
        ("hookpoint", pa.string()), ("latent", pa.int32()), ("explanation", pa.string()), ("raw", pa.string()),
        ("error", pa.string()), ("model", pa.string()), ("strategy", pa.string()), ("n_examples", pa.int32()),
        ("created_at", pa.timestamp("us")),
        ("shown", pa.string()),  # JSON [[doc_id, start], ...]: the windows the explainer saw
        # "input" (from activating examples) or "output" (from clean vs steered continuations); NULL in
        # parts written before output explanations existed, read as "input"
        ("kind", pa.string()),
        # what computed it: backend, dtype, device ("transformers bfloat16 cpu"); NULL before it was recorded
        ("engine", pa.string()),
        ("explainer", pa.string())]),  # default | contrastive (explain.EXPLAINERS); NULL before: default
    "scores": pa.schema([
        ("score_id", pa.string()), ("hookpoint", pa.string()), ("latent", pa.int32()), ("scorer", pa.string()),
        ("explanation", pa.string()), ("model", pa.string()), ("mode", pa.string()), ("error", pa.string()),
        ("n", pa.int32()), ("n_failed", pa.int32()), ("balanced_accuracy", pa.float64()),
        ("precision", pa.float64()), ("recall", pa.float64()), ("f1", pa.float64()), ("auroc", pa.float64()),
        ("accuracy", pa.float64()), ("accuracy_per_decile", pa.string()), ("correlation", pa.float64()),
        ("correlation_per_quantile", pa.string()), ("created_at", pa.timestamp("us")),
        # intervention: mean log P(expl | steered) - log P(expl | clean) at target_kl (KL of the next token)
        ("target_kl", pa.float64()), ("intervention_score", pa.float64()),
        ("explanation_kind", pa.string()),  # the kind of explanation scored; NULL (older parts) = "input"
        # detection/fuzzing: how yes/no decisions (accuracies, F1) were made from the read-outs;
        # NULL in parts written before the rank rule: logprob decisions were P > 0.5 then
        ("decision_rule", pa.string()),
        # 95 % intervals (metrics.auroc_ci: DeLong; balanced_accuracy_ci; simulation: windows
        # bootstrapped); NULL in parts written before them (shown as "-")
        ("auroc_lo", pa.float64()), ("auroc_hi", pa.float64()), ("balanced_accuracy_lo", pa.float64()),
        ("balanced_accuracy_hi", pa.float64()), ("correlation_lo", pa.float64()), ("correlation_hi", pa.float64()),
        # intervention: t interval over the prompts' gains (NULL before it existed)
        ("intervention_score_lo", pa.float64()), ("intervention_score_hi", pa.float64()),
        # intruder: Wilson interval of the share of right calls (NULL before intruder scoring existed)
        ("accuracy_lo", pa.float64()), ("accuracy_hi", pa.float64()),
        ("engine", pa.string())]),  # as for explanations; the embedding scorer: its embedder's
    "decisions": pa.schema([
        ("score_id", pa.string()), ("hookpoint", pa.string()), ("latent", pa.int32()), ("scorer", pa.string()),
        ("doc_id", pa.int32()), ("start", pa.int32()), ("activating", pa.bool_()), ("quantile", pa.int32()),
        ("prediction", pa.bool_()), ("probability", pa.float64()), ("failed", pa.bool_()), ("raw", pa.string()),
        ("shown", pa.string()),
        ("prompt", pa.int32()), ("slot", pa.int32()),  # detection/fuzzing: which prompt, which place in it
        ("p_explanation", pa.float64()), ("p_neutral", pa.float64())]),  # calibration's two read-outs of P(Yes)
    # intervention scoring (autointerp/intervention): one row per (score, target KL) with the alpha
    # found for the latent's unit direction and for a random one, and the three scores (nats)
    "interventions": pa.schema([
        ("score_id", pa.string()), ("hookpoint", pa.string()), ("latent", pa.int32()), ("target_kl", pa.float64()),
        ("alpha", pa.float64()), ("kl", pa.float64()), ("reached", pa.bool_()), ("iterations", pa.int32()),
        ("random_alpha", pa.float64()), ("random_kl", pa.float64()), ("random_reached", pa.bool_()),
        ("score", pa.float64()), ("random_explanation_score", pa.float64()), ("random_direction_score", pa.float64()),
        ("explanation", pa.string()), ("random_explanation", pa.string()), ("n", pa.int32()),
        ("created_at", pa.timestamp("us"))]),
    # one row per (score, target KL, direction latent|random, prompt): the texts and log P(explanation | text)
    "intervention_examples": pa.schema([
        ("score_id", pa.string()), ("hookpoint", pa.string()), ("latent", pa.int32()), ("target_kl", pa.float64()),
        ("direction", pa.string()), ("prompt", pa.int32()), ("doc_id", pa.int32()), ("prompt_text", pa.string()),
        ("clean_text", pa.string()), ("steered_text", pa.string()), ("logp_clean", pa.float64()),
        ("logp_steered", pa.float64()), ("random_logp_clean", pa.float64()), ("random_logp_steered", pa.float64()),
        ("created_at", pa.timestamp("us"))]),
    "validity": pa.schema([
        ("validation_id", pa.string()), ("hookpoint", pa.string()), ("latent", pa.int32()), ("scorer", pa.string()),
        ("which", pa.string()), ("explanation", pa.string()), ("value", pa.float64()), ("n", pa.int32()),
        ("n_failed", pa.int32()), ("error", pa.string()), ("model", pa.string()), ("mode", pa.string()),
        ("created_at", pa.timestamp("us"))]),
    "validity_summary": pa.schema([
        ("validation_id", pa.string()), ("hookpoint", pa.string()), ("scorer", pa.string()), ("model", pa.string()),
        ("mode", pa.string()), ("calibrated", pa.bool_()), ("n_latents", pa.int32()), ("true_mean", pa.float64()),
        ("random_mean", pa.float64()), ("neutral_mean", pa.float64()), ("diff", pa.float64()),
        ("ci_lo", pa.float64()), ("ci_hi", pa.float64()), ("validated", pa.bool_()),
        ("created_at", pa.timestamp("us")),
        # validity.verdict's word and the sign-flip p-value; NULL in parts written before them, when
        # `validated` came from a percentile bootstrap from 3 latents on (over-confident: shown as such)
        ("verdict", pa.string()), ("p_value", pa.float64())]),
    # the paper's analyses (autointerp/studies.py): one study_id per launch of a study, all its rows
    # carry it; "condition" is what the study compares (a sampling strategy, a latent set)
    "study_explanations": pa.schema([
        ("study_id", pa.string()), ("study", pa.string()), ("condition", pa.string()), ("hookpoint", pa.string()),
        ("latent", pa.int32()), ("explanation", pa.string()), ("raw", pa.string()), ("error", pa.string()),
        ("model", pa.string()), ("strategy", pa.string()), ("n_examples", pa.int32()), ("shown", pa.string()),
        ("created_at", pa.timestamp("us"))]),
    "study_scores": pa.schema([
        ("study_id", pa.string()), ("study", pa.string()), ("condition", pa.string()), ("hookpoint", pa.string()),
        ("latent", pa.int32()), ("scorer", pa.string()), ("explanation", pa.string()), ("value", pa.float64()),
        ("n", pa.int32()), ("n_failed", pa.int32()), ("error", pa.string()), ("model", pa.string()),
        ("mode", pa.string()), ("accuracy_per_decile", pa.string()), ("created_at", pa.timestamp("us"))]),
    # adjacent-layer overlap: one row per matched pair (basis "decoder" or "explanation")
    "overlap_pairs": pa.schema([
        ("study_id", pa.string()), ("basis", pa.string()), ("family", pa.string()), ("set_a", pa.string()),
        ("set_b", pa.string()), ("latent_a", pa.int32()), ("latent_b", pa.int32()), ("similarity", pa.float64()),
        ("decoder_partner", pa.bool_()), ("explanation_a", pa.string()), ("explanation_b", pa.string()),
        ("created_at", pa.timestamp("us"))]),
    "overlap_summary": pa.schema([
        ("study_id", pa.string()), ("basis", pa.string()), ("family", pa.string()), ("set_a", pa.string()),
        ("set_b", pa.string()), ("n", pa.int32()), ("matched_mean", pa.float64()), ("matched_lo", pa.float64()),
        ("matched_hi", pa.float64()), ("baseline", pa.string()), ("baseline_mean", pa.float64()),
        ("baseline_lo", pa.float64()), ("baseline_hi", pa.float64()), ("random_pair_mean", pa.float64()),
        ("recovered", pa.float64()), ("model", pa.string()), ("created_at", pa.timestamp("us")),
        # decoder basis: matched - baseline with a Welch t interval; NULL in parts written when the
        # baseline was coordinate shuffling (their `baseline` column says so)
        ("excess_mean", pa.float64()), ("excess_lo", pa.float64()), ("excess_hi", pa.float64())]),
}
STUDY_KINDS = ("study_explanations", "study_scores", "overlap_pairs", "overlap_summary")


def append_results(run_dir: Path, kind: str, rows: list[dict]) -> Path | None:
    """Write rows as a new part of results/<kind>/ (atomic); never rewrites earlier parts."""
    if not rows:
        return None
    schema = RESULT_SCHEMAS[kind]
    # UTC (stored without a zone): a clock change or writers in two time zones never make an older
    # result look newer. Parts written before this stored local time; on machines kept in UTC
    # (these) the two agree.
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    cols = {f.name: [r.get(f.name, now if f.name == "created_at" else None) for r in rows] for f in schema}
    path = run_dir / "results" / kind / f"part-{time.time_ns()}-{os.getpid()}.parquet"
    write_parquet_atomic(pa.table(cols, schema=schema), path)
    return path


def remove_stale_result_temp(run_dir: Path) -> None:
    """Clear killed writers' temporary files from every results folder (called when a job starts)."""
    for kind in RESULT_SCHEMAS:
        remove_stale_temp(run_dir / "results" / kind)


# (path, size, mtime_ns) -> whether its Parquet footer reads; a part is checked once per version.
_PART_READABLE: dict[tuple[str, int, int], bool] = {}


def _part_readable(path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:  # compacted away between the glob and now
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _PART_READABLE:
        try:
            pq.read_metadata(path)
            _PART_READABLE[key] = True
        except (OSError, pa.ArrowException):
            log.warning("skipping unreadable result part %s: move it aside (e.g. rename it to end in .corrupt); "
                        "the rest of the run's results are read without it", path)
            _PART_READABLE[key] = False
    return _PART_READABLE[key]


def corrupt_result_parts(run_dir: Path) -> list[Path]:
    """Result parts whose Parquet footer does not read; every query skips them."""
    return [p for kind in RESULT_SCHEMAS for p in sorted((run_dir / "results" / kind).glob("part-*.parquet"))
            if not _part_readable(p)]


# "Latest wins" with a deterministic tie-break: rows with the same created_at are ordered by their
# part's name (part-<time_ns>-<pid>: later parts sort later) and then by their row in the part.
NEWEST_FIRST_READ = "union_by_name = true, filename = true, file_row_number = true"
NEWEST_FIRST = "created_at DESC, filename DESC, file_row_number DESC"


def _results_glob(run_dir: Path, kind: str) -> str | None:
    """A DuckDB list of the readable parts of results/<kind>/, or None when there are none. Parts
    are append-only logs: one corrupt part is skipped with a warning, never the whole run."""
    d = run_dir / "results" / kind
    parts = [p for p in sorted(d.glob("part-*.parquet")) if _part_readable(p)] if d.is_dir() else []
    if not parts:
        return None
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in parts) + "]"


def _empty(kind: str) -> pd.DataFrame:
    return RESULT_SCHEMAS[kind].empty_table().to_pandas()


def _nulls_to_none(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Missing strings as None, never NaN: NaN is truthy, so `if row.explanation` once took a failed
    explanation for a real one and crashed scoring."""
    for f in RESULT_SCHEMAS[kind]:
        if pa.types.is_string(f.type) and f.name in df.columns:
            col = df[f.name].astype(object)
            df[f.name] = col.where(col.notna(), None)
    return df


def present(value) -> bool:
    """A stored string that is there and not empty (None, NaN and pd.NA are all absent)."""
    return isinstance(value, str) and bool(value.strip())


EXPLANATION_KINDS = ("input", "output")
# the column that says which kind of explanation a row belongs to, per result kind
_KIND_COLUMN = {"explanations": "kind", "scores": "explanation_kind"}


class ResultsMixin:
    """Result queries of RunStore (kept apart so the activation API reads on its own)."""

    def _kind_filter(self, kind: str, src: str, explanation_kind: str | None) -> tuple[str, list]:
        """(SQL condition, params) keeping rows of one explanation kind. Parts written before the
        column existed read as "input": NULL under union_by_name, or no such column at all when
        every part predates it (then the condition is a constant)."""
        column = _KIND_COLUMN.get(kind)
        if explanation_kind is None or column is None:
            return "TRUE", []
        if column not in self._columns(src):
            return ("TRUE" if explanation_kind == "input" else "FALSE"), []
        return f"coalesce({column}, 'input') = ?", [explanation_kind]

    def _columns(self, src: str) -> set[str]:
        """The columns of a list of result parts (union by name: any part's column counts)."""
        return set(self._sql(f"DESCRIBE SELECT * FROM read_parquet({src}, union_by_name = true)").column_name)

    def _rows(self, kind: str, where: str, params: list, order: str) -> pd.DataFrame:
        """Every row of results/<kind> matching `where`, in `order` (empty when nothing is stored)."""
        src = _results_glob(self.run_dir, kind)
        if src is None:
            return _empty(kind)
        return _nulls_to_none(self._sql(f"SELECT * FROM read_parquet({src}, union_by_name = true) "
                                        f"WHERE {where} ORDER BY {order}", params), kind)

    def _latest(self, kind: str, keys: str, hookpoint: str | None,
                explanation_kind: str | None = None, model: str | None = None) -> pd.DataFrame:
        src = _results_glob(self.run_dir, kind)
        if src is None:
            return _empty(kind)
        cond, params = self._kind_filter(kind, src, explanation_kind)
        where = f"WHERE {cond}" + (" AND hookpoint = ?" if hookpoint else "") + (" AND model = ?" if model else "")
        params += ([hookpoint] if hookpoint else []) + ([model] if model else [])
        return _nulls_to_none(self._sql(f"""SELECT * EXCLUDE (filename, file_row_number)
                             FROM read_parquet({src}, {NEWEST_FIRST_READ}) {where}
                             QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {NEWEST_FIRST}) = 1
                             ORDER BY {keys}""", params), kind)

    def explanations(self, hookpoint: str | None = None, kind: str = "input", model: str | None = None
                     ) -> pd.DataFrame:
        """Latest explanation record of one kind per (hookpoint, latent), failures included
        (explanation NULL). Input explanations by default: a latent can have an input and an
        output explanation, and everything but `--kind output` works on the input one. `model`:
        the latest among that explainer's records only (e.g. "transformers:qwen1.5b")."""
        return self._latest("explanations", "hookpoint, latent", hookpoint, kind, model)

    def scores(self, hookpoint: str | None = None, kind: str = "input") -> pd.DataFrame:
        """Latest score per (hookpoint, latent, scorer) of one kind of explanation (input by
        default), so scoring a latent's output explanation never replaces its input one's score.
        Whatever explanation it scored: what the app shows beside an explanation is current_scores."""
        return self._latest("scores", "hookpoint, latent, scorer", hookpoint, kind)

    def current_explanations(self, hookpoint: str | None = None, kind: str = "input") -> pd.DataFrame:
        """Per (hookpoint, latent) its current explanation: the latest one that did not fail. A
        latent whose newest attempt failed keeps its last good explanation; `newest_failed` and
        `newest_error` say so. Latents that never got a good explanation have no row."""
        cte = self._current_explanations_sql(hookpoint, kind)
        if cte is None:
            return _empty("explanations").assign(newest_failed=pd.Series(dtype=bool), newest_error=None)
        sql, params = cte
        rows = self._sql(f"""WITH {sql}
            SELECT good.* EXCLUDE (filename, file_row_number), newest.newest_failed,
                   CASE WHEN newest.newest_failed THEN newest.newest_error END AS newest_error
            FROM good JOIN newest USING (hookpoint, latent) ORDER BY hookpoint, latent""", params)
        return _nulls_to_none(rows, "explanations")

    def _current_explanations_sql(self, hookpoint: str | None, kind: str) -> tuple[str, list] | None:
        """CTEs `good` (latest non-failed explanation per latent) and `newest` (latest attempt, and
        whether it failed), with their parameters; None when nothing was explained."""
        src = _results_glob(self.run_dir, "explanations")
        if src is None:
            return None
        cond, params = self._kind_filter("explanations", src, kind)
        hp = " AND hookpoint = ?" if hookpoint else ""
        return (f"""e AS (SELECT * FROM read_parquet({src}, {NEWEST_FIRST_READ}) WHERE {cond}{hp}),
            good AS (SELECT * FROM e WHERE explanation IS NOT NULL
                     QUALIFY row_number() OVER (PARTITION BY hookpoint, latent ORDER BY {NEWEST_FIRST}) = 1),
            newest AS (SELECT hookpoint, latent, explanation IS NULL AS newest_failed, error AS newest_error FROM e
                       QUALIFY row_number() OVER (PARTITION BY hookpoint, latent ORDER BY {NEWEST_FIRST}) = 1)""",
                params + ([hookpoint] if hookpoint else []))

    def current_scores(self, hookpoint: str | None = None, kind: str = "input") -> pd.DataFrame:
        """Latest score per (hookpoint, latent, scorer) of the latent's current explanation only
        (one query): a score of an earlier explanation is never shown beside a newer one (it stays
        in the latent's history). Every view, export and analysis reads these."""
        src = _results_glob(self.run_dir, "scores")
        if src is None:
            return _empty("scores")
        # scores of explanation-free scorers (intruder) judge the latent: current whatever it shows
        cte = self._current_explanations_sql(hookpoint, kind) or (
            "good AS (SELECT NULL::VARCHAR AS hookpoint, NULL::INTEGER AS latent, NULL::VARCHAR AS explanation "
            "WHERE FALSE)", [])
        sql, params = cte
        cond, kind_params = self._kind_filter("scores", src, kind)
        hp = " AND s.hookpoint = ?" if hookpoint else ""
        free = ", ".join("?" for _ in EXPLANATION_FREE)
        rows = self._sql(f"""WITH {sql}
            SELECT s.* EXCLUDE (filename, file_row_number)
            FROM read_parquet({src}, {NEWEST_FIRST_READ}) s
            LEFT JOIN good ON s.hookpoint = good.hookpoint AND s.latent = good.latent
            WHERE (s.explanation = good.explanation OR s.scorer IN ({free})) AND {cond}{hp}
            QUALIFY row_number() OVER (PARTITION BY s.hookpoint, s.latent, s.scorer
                                       ORDER BY s.created_at DESC, s.filename DESC, s.file_row_number DESC) = 1
            ORDER BY s.hookpoint, s.latent, s.scorer""",
                         params + list(EXPLANATION_FREE) + kind_params + ([hookpoint] if hookpoint else []))
        return _nulls_to_none(rows, "scores")

    def engines(self) -> pd.DataFrame:
        """Which model and engine (backend, dtype, device) computed this run's explanations and
        scores: one row per (results, model, engine) with its row count and newest time; parts
        written before engines were recorded read "not recorded"."""
        frames = []
        for kind in ("explanations", "scores"):
            src = _results_glob(self.run_dir, kind)
            if src is None:
                continue
            engine = "coalesce(engine, 'not recorded')" if "engine" in self._columns(src) else "'not recorded'"
            frames.append(self._sql(
                f"SELECT ? AS results, model, {engine} AS engine, count(*) AS rows, max(created_at) AS newest "
                f"FROM read_parquet({src}, union_by_name = true) GROUP BY ALL ORDER BY rows DESC, model", [kind]))
        if not frames:
            return pd.DataFrame(columns=["results", "model", "engine", "rows", "newest"])
        return pd.concat(frames, ignore_index=True)

    def validity(self, hookpoint: str | None = None) -> pd.DataFrame:
        """Latest validity summary per (hookpoint, scorer): is the scorer validated on this run?"""
        return self._latest("validity_summary", "hookpoint, scorer", hookpoint)

    def validity_details(self, validation_id: str) -> pd.DataFrame:
        """Per-latent values (true, random, neutral explanation) behind one validation."""
        return self._rows("validity", "validation_id = ?", [validation_id], "scorer, latent, which")

    def study_results(self, kind: str, study: str | None = None, study_id: str | None = None) -> pd.DataFrame:
        """Every row of one study launch (results/<kind>, a STUDY_KINDS member): `study_id`, else
        the newest launch that wrote rows of `study` (sampling, coders; for overlap kinds, any)."""
        if kind not in STUDY_KINDS:
            raise ValueError(kind)
        src = _results_glob(self.run_dir, kind)
        if src is None:
            return _empty(kind)
        if study_id is None:
            cond, params = ("study = ?", [study]) if study and kind.startswith("study_") else ("TRUE", [])
            latest = self._sql(f"SELECT study_id FROM read_parquet({src}, union_by_name = true) WHERE {cond} "
                               f"GROUP BY study_id ORDER BY max(created_at) DESC LIMIT 1", params)
            if latest.empty:
                return _empty(kind)
            study_id = str(latest.study_id[0])
        return self._rows(kind, "study_id = ?", [study_id], "created_at")

    def study_launches(self, kind: str) -> pd.DataFrame:
        """(study_id, study, rows, first, last) of every launch that wrote results/<kind>, newest first."""
        src = _results_glob(self.run_dir, kind)
        if src is None:
            return pd.DataFrame(columns=["study_id", "study", "rows", "first", "last"])
        study = "study" if kind.startswith("study_") else "'overlap'"
        return self._sql(f"SELECT study_id, any_value({study}) AS study, count(*) AS rows, min(created_at) AS first, "
                         f"max(created_at) AS last FROM read_parquet({src}, union_by_name = true) "
                         f"GROUP BY study_id ORDER BY last DESC")

    def corrupt_parts(self) -> list[Path]:
        """Result parts that every query skips because they do not read (shown by the app)."""
        return corrupt_result_parts(self.run_dir)

    def version(self) -> tuple:
        """Changes whenever results land or the run grows (for caches of what pages show)."""
        return self.results_version(), self._signature

    def results_version(self) -> float:
        """Changes whenever a results part lands (for caches that must see new results)."""
        parts = list((self.run_dir / "results").glob("*/part-*.parquet"))
        return len(parts) + max((p.stat().st_mtime for p in parts), default=0.0)

    def latent_results(self, kind: str, hookpoint: str, latent: int,
                       explanation_kind: str | None = "input") -> pd.DataFrame:
        """Every explanation or score record of one latent, newest first (its history), of one
        kind of explanation (input by default; None: all kinds)."""
        src = _results_glob(self.run_dir, kind)
        if src is None:
            return _empty(kind)
        cond, params = self._kind_filter(kind, src, explanation_kind)
        return _nulls_to_none(self._sql(f"SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet({src}, "
                                        f"{NEWEST_FIRST_READ}) WHERE {cond} AND hookpoint = ? AND latent = ? "
                                        f"ORDER BY {NEWEST_FIRST}",
                                        params + [hookpoint, int(latent)]), kind)

    def interventions(self, hookpoint: str | None = None, kind: str = "input") -> pd.DataFrame:
        """Per (latent, target KL) steering results behind each latent's latest intervention score
        (of its input explanation by default)."""
        latest = self.current_scores(hookpoint, kind)
        ids = latest.score_id[latest.scorer == "intervention"].tolist()
        if not ids:
            return _empty("interventions")
        return self._rows("interventions", "list_contains(?, score_id)", [ids], "hookpoint, latent, target_kl")

    def intervention_examples(self, score_id: str) -> pd.DataFrame:
        """The prompts, clean and steered continuations and log-probabilities behind one score."""
        return self._rows("intervention_examples", "score_id = ?", [score_id], "target_kl, direction, prompt")

    def decisions(self, score_id: str) -> pd.DataFrame:
        return self._rows("decisions", "score_id = ?", [score_id], "activating DESC, quantile DESC, doc_id, start")


class RunStore(ResultsMixin):
    """Read API over one run. One in-process DuckDB connection; safe to share across threads."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._con = None
        self._signature: tuple | None = None
        self.refresh()

    # -- setup ---------------------------------------------------------------------------------

    def _read_info(self) -> dict:
        manifest = self.run_dir / "run.json"
        if not manifest.exists():
            raise AutointerpError(f"no run at {self.run_dir}: run `autointerp cache` or `autointerp demo` first")
        try:
            return json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise AutointerpError(f"{manifest} is corrupt ({e.msg}): delete the run folder and cache it again") from e

    def _files_signature(self) -> tuple:
        """What changes when the run is published further (grown) or its token files rewritten."""
        files = [self.run_dir / "run.json", self.run_dir / TOKENS_NPY, self.run_dir / "token_strings.parquet",
                 *sorted((self.run_dir / "acts").glob("*/acts.parquet")),
                 *sorted((self.run_dir / "acts").glob("*/latents.parquet"))]
        out = []
        for f in files:
            try:
                st = f.stat()
                out.append((f.name, f.parent.name, st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                continue
        return tuple(out)

    def refresh(self) -> None:
        """Pick up latent sets finalized since the store was opened, and a run that grew: when its
        files changed, the manifest, token matrix and strings are read again and the DuckDB
        connection (whose Parquet metadata cache knows the old files) is opened anew."""
        signature = self._files_signature()
        if signature != self._signature:
            info = self._read_info()
            con = _connect("1GB")
            with self._lock:
                old, self._con = self._con, con
                self.info = info
                self.window = int(info.get("window", 32))
                self._tokens: np.ndarray | None = None
                self._strings: dict[int, str] | None = None
                self._signature = signature
            if old is not None:
                old.close()
        sets = sorted(p.parent.name for p in (self.run_dir / "acts").glob("*/latents.parquet"))
        self._sets = [s for s in sets if (self.run_dir / "acts" / s / "acts.parquet").exists()]

    def _sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        with self._lock:
            try:
                return self._con.execute(query, params or []).df()
            except (duckdb.IOException, duckdb.InvalidInputException) as e:
                first = str(e).splitlines()[0][:200]
                if str(self.run_dir / "results") in str(e):
                    raise AutointerpError(f"run {self.run_dir.name}: a result part is unreadable ({first}): "
                                          f"move that file aside and reload") from e
                raise AutointerpError(f"run {self.run_dir.name}: a data file is unreadable "
                                      f"({first}): re-run `autointerp cache`") from e

    def _acts(self, hookpoint: str) -> str:
        if hookpoint not in self._sets:
            raise AutointerpError(f"run {self.run_dir.name} has no latent set {hookpoint!r}: "
                                  f"choose one of {', '.join(self._sets) or '(none cached yet)'}")
        return f"read_parquet('{self.run_dir / 'acts' / hookpoint / 'acts.parquet'}')"

    def _latents(self, hookpoint: str) -> str:
        self._acts(hookpoint)
        return f"read_parquet('{self.run_dir / 'acts' / hookpoint / 'latents.parquet'}')"

    @property
    def n_contexts(self) -> int:
        """Contexts the run's latent sets cover (a growing run's token matrix holds more)."""
        return min(int(self.info.get("n_contexts", len(self.tokens))), len(self.tokens))

    @property
    def tokens(self) -> np.ndarray:
        """[contexts, 1 + ctx_len] token ids of every context cached or planned (n_contexts of them
        are published): memory-mapped from tokens.npy (only the pages read are in memory), or loaded
        once from tokens.parquet for runs cached before the .npy existed."""
        if self._tokens is None and (self.run_dir / TOKENS_NPY).exists():
            self._tokens = np.load(self.run_dir / TOKENS_NPY, mmap_mode="r")
        if self._tokens is None:
            df = self._sql(f"SELECT doc_id, pos, token_id FROM read_parquet('{self.run_dir / 'tokens.parquet'}')")
            arr = np.zeros((int(df.doc_id.max()) + 1, int(df.pos.max()) + 1), dtype=np.int32)
            arr[df.doc_id.to_numpy(), df.pos.to_numpy()] = df.token_id.to_numpy()
            self._tokens = arr
        return self._tokens

    @property
    def token_strings(self) -> dict[int, str]:
        """Each token id's text, the subject's special tokens as SPECIAL_TOKEN_MARK. Mapped here, at
        read time, so runs cached before the mapping are fixed too: runs without the `special`
        column (recorded at cache time) recognise special tokens by their `<|...|>` form."""
        if self._strings is None:
            df = self._sql(f"SELECT * FROM read_parquet('{self.run_dir / 'token_strings.parquet'}')")
            special = (df.special.fillna(False).astype(bool) if "special" in df.columns
                       else df.token.str.fullmatch(r"<\|[^|\s]+\|>").fillna(False))
            tokens = df.token.where(~special, SPECIAL_TOKEN_MARK)
            self._strings = dict(zip(df.token_id.tolist(), tokens.tolist()))
        return self._strings

    # -- run level ------------------------------------------------------------------------------

    def hookpoints(self) -> list[str]:
        return list(self._sets)

    def n_windows(self) -> int:
        ctx_len = self.tokens.shape[1] - 1
        return self.n_contexts * (-(-ctx_len // self.window))

    # -- latent table ---------------------------------------------------------------------------

    def latent_table(self, hookpoint: str, sort: str = "frequency", descending: bool = True,
                     min_frequency: float | None = None, max_frequency: float | None = None,
                     min_max_act: float | None = None, latents: list[int] | None = None,
                     limit: int = 50, offset: int = 0) -> tuple[pd.DataFrame, int]:
        """One page of a set's latents and the total count matching the filters."""
        if sort not in LATENT_SORT_COLUMNS:
            raise AutointerpError(f"cannot sort by {sort!r}: use one of {', '.join(LATENT_SORT_COLUMNS)}")
        where, params = ["TRUE"], []
        for cond, value in (("frequency >= ?", min_frequency), ("frequency <= ?", max_frequency),
                            ("max_act >= ?", min_max_act)):
            if value is not None:
                where.append(cond)
                params.append(value)
        if latents is not None:
            where.append("list_contains(?, latent)")
            params.append([int(x) for x in latents])
        w = " AND ".join(where)
        src = self._latents(hookpoint)
        total = int(self._sql(f"SELECT count(*) AS n FROM {src} WHERE {w}", params).n[0])
        page = self._sql(
            f"SELECT latent, count, frequency, max_act, mean_act FROM {src} WHERE {w} "
            f"ORDER BY {sort} {'DESC' if descending else 'ASC'}, latent LIMIT {int(limit)} OFFSET {int(offset)}",
            params)
        return page, total

    def latent_stats(self, hookpoint: str, latent: int) -> dict:
        df = self._sql(f"SELECT * FROM {self._latents(hookpoint)} WHERE latent = ?", [int(latent)])
        if df.empty:
            raise AutointerpError(f"latent {latent} does not exist in {hookpoint}: ids run from 0 to "
                                  f"{self.n_latents(hookpoint) - 1}")
        row = df.iloc[0].to_dict()
        row["histogram"] = [int(x) for x in row["histogram"]]
        return row

    def n_latents(self, hookpoint: str) -> int:
        return int(self._sql(f"SELECT count(*) AS n FROM {self._latents(hookpoint)}").n[0])

    def histogram(self, hookpoint: str, latent: int, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, counts) of the latent's non-zero activations; pass its latent_stats to skip a query."""
        s = stats or self.latent_stats(hookpoint, latent)
        counts = np.asarray(s["histogram"])
        return np.linspace(s["hist_lo"], s["hist_hi"], len(counts) + 1), counts

    # -- examples -------------------------------------------------------------------------------

    def _windows(self, hookpoint: str, latent: int, order: str, limit: int | None,
                 n_quantiles: int | None = None, seed: int = 0,
                 exclude: list[tuple[int, int]] | None = None) -> pd.DataFrame:
        """Activating windows of a latent (doc_id, w, mx, q) chosen by `order`, with every
        activation in them (pos, value). `exclude` ((doc_id, start) keys, quantiles only) is left
        out after the quantiles are cut and before sampling, so each quantile keeps its quota."""
        w = self.window
        skip = sorted({int(d) * 65536 + (int(s) - 1) // w for d, s in exclude or []})  # w < 2**16 (int16 pos)
        keep = "WHERE NOT list_contains(?::BIGINT[], doc_id::BIGINT * 65536 + w)" if skip else ""
        # DuckDB's multi-argument hash keeps the order for nearby seeds; a hashed string mixes well.
        shuffle = f"hash(doc_id::VARCHAR || ':' || w::VARCHAR || ':{int(seed)}')"
        if order == "top":
            pick = f"SELECT *, NULL::INTEGER AS q FROM win ORDER BY mx DESC, doc_id, w LIMIT {int(limit)}"
        elif order == "random":
            pick = f"SELECT *, NULL::INTEGER AS q FROM win ORDER BY {shuffle} LIMIT {int(limit)}"
        elif order == "quantiles":
            pick = f"""SELECT doc_id, w, mx, q FROM (
                           SELECT *, row_number() OVER (PARTITION BY q ORDER BY {shuffle}) AS r
                           FROM (SELECT *, ntile({int(n_quantiles)}) OVER (ORDER BY mx, doc_id, w) AS q FROM win)
                           {keep})
                       WHERE r <= {int(limit)}"""
        else:
            raise ValueError(order)
        return self._sql(f"""
            WITH a AS (SELECT doc_id, pos, value, (pos - 1) // {w} AS w
                       FROM {self._acts(hookpoint)} WHERE latent = ?),
                 win AS (SELECT doc_id, w, max(value) AS mx FROM a GROUP BY doc_id, w),
                 chosen AS ({pick})
            SELECT c.doc_id, c.w, c.mx, c.q, a.pos, a.value FROM chosen c JOIN a USING (doc_id, w)""",
                         [int(latent)] + ([skip] if skip and order == "quantiles" else []))

    def _to_examples(self, df: pd.DataFrame) -> list[Example]:
        out = []
        for (doc, w), g in df.groupby(["doc_id", "w"], sort=False):
            ex = self.window_example(int(doc), int(w))
            for pos, value in zip(g.pos.to_numpy(), g.value.to_numpy()):
                ex.acts[int(pos) - ex.start] = float(value)
            q = g.q.iloc[0]
            ex.quantile = None if pd.isna(q) else int(q)
            out.append(ex)
        return out

    def window_example(self, doc_id: int, w: int) -> Example:
        """Window w of context doc_id with all activations zero (fill in `acts`)."""
        start = 1 + w * self.window
        if doc_id >= len(self.tokens):  # the run grew since this store read its token files
            self._tokens = self._strings = None
        ids = self.tokens[doc_id, start:start + self.window].tolist()
        strings = self.token_strings
        return Example(doc_id, start, ids, [strings.get(t, f"<{t}>") for t in ids], [0.0] * len(ids))

    def top_examples(self, hookpoint: str, latent: int, n: int = 20) -> list[Example]:
        ex = self._to_examples(self._windows(hookpoint, latent, "top", n))
        return sorted(ex, key=lambda e: (-e.max_act, e.doc_id, e.start))

    def random_examples(self, hookpoint: str, latent: int, n: int = 20, seed: int = 0) -> list[Example]:
        ex = self._to_examples(self._windows(hookpoint, latent, "random", n, seed=seed))
        return sorted(ex, key=lambda e: (e.doc_id, e.start))

    def quantile_examples(self, hookpoint: str, latent: int, n_quantiles: int = 10, per_quantile: int = 5,
                          seed: int = 0, exclude: list[tuple[int, int]] | None = None) -> list[Example]:
        """Activating windows sorted by max activation, cut into n_quantiles equal-count slices,
        per_quantile sampled from each (seeded) among those not in `exclude` ((doc_id, start)
        keys). Example.quantile: 1 = weakest slice."""
        ex = self._to_examples(self._windows(hookpoint, latent, "quantiles", per_quantile,
                                             n_quantiles=n_quantiles, seed=seed, exclude=exclude))
        return sorted(ex, key=lambda e: (-(e.quantile or 0), -e.max_act, e.doc_id))

    def active_windows(self, hookpoint: str, latent: int) -> pd.DataFrame:
        """(doc_id, w) of every window where the latent fires at least once."""
        return self._sql(f"SELECT DISTINCT doc_id, (pos - 1) // {self.window} AS w "
                         f"FROM {self._acts(hookpoint)} WHERE latent = ?", [int(latent)])

    def non_activating_examples(self, hookpoint: str, latent: int, n: int = 20, seed: int = 0) -> list[Example]:
        """Random windows where the latent never fires, seeded per (seed, hookpoint, latent) so
        each latent gets its own."""
        active = self.active_windows(hookpoint, latent)
        n_ctx, width = self.n_contexts, self.tokens.shape[1]
        per_ctx = -(-(width - 1) // self.window)
        taken = set((active.doc_id * per_ctx + active.w).tolist())
        free = n_ctx * per_ctx - len(taken)
        rng = np.random.default_rng(latent_seed(seed, hookpoint, latent))
        chosen: list[int] = []
        seen = set(taken)
        while len(chosen) < min(n, free):
            for k in rng.integers(0, n_ctx * per_ctx, size=4 * n).tolist():
                if k not in seen:
                    seen.add(k)
                    chosen.append(k)
                    if len(chosen) == min(n, free):
                        break
        return [self.window_example(k // per_ctx, k % per_ctx) for k in chosen]


