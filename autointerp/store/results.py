"""Results: explanations, scores and per-example decisions in append-only parts; the latest row wins."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from autointerp.config import EXPLANATION_FREE
from autointerp.core.atomic import atomic_write_json, remove_stale_temp, tmp_prefix
from autointerp.core.faults import fault_point
from autointerp.store.files import connect, write_parquet_atomic
from autointerp.store.search_index import record_path

log = logging.getLogger(__name__)

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
    # the paper's analyses (autointerp/runs/studies.py): one study_id per launch of a study, all its rows
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


COMPACTION_RECORD = "compaction.json"  # in results/<kind>/: the last compaction's merged part and what it replaced


def _compaction_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / COMPACTION_RECORD).read_text())
    except FileNotFoundError:
        return None


def result_parts(run_dir: Path, kind: str) -> list[Path]:
    """The readable parts of results/<kind>/ that a query reads, oldest first. Parts that a
    compaction replaced stay on disk until the next compaction (a reader that listed them a moment
    before still finds them), but once its merged part is listed they are left out, so no row is
    read twice; the record is read before and after the listing, so a compaction finishing in
    between is seen."""
    d = run_dir / "results" / kind
    if not d.is_dir():
        return []
    for _ in range(5):
        before = _compaction_record(d)
        names = sorted(p.name for p in d.glob("part-*.parquet"))
        record = _compaction_record(d)
        if record == before:
            break
    if record and record["merged"] in names:
        replaced = set(record["replaced"])
        names = [n for n in names if n not in replaced]
    return [d / n for n in names if _part_readable(d / n)]


def _results_glob(run_dir: Path, kind: str) -> str | None:
    """A DuckDB list of the parts of results/<kind>/ to read, or None when there are none. Parts
    are append-only logs: one corrupt part is skipped with a warning, never the whole run."""
    parts = result_parts(run_dir, kind)
    return _sql_list(parts) if parts else None


def _sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths (quotes doubled)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


COMPACT_GRACE_S = 60.0  # how long replaced parts stay for readers that listed them before the merge
COMPACTED_ROW_GROUP_ROWS = 10_000  # a latent's rows in a compacted part: one group of 10k rows to read


def compact_results(run_dir: Path, kind: str, grace_s: float = COMPACT_GRACE_S, memory_limit: str = "1GB") -> int:
    """Merge results/<kind>/'s parts into one part (a long campaign leaves thousands of small
    ones, and every query opens each); returns how many parts were merged. Safe while readers
    read and at a kill anywhere: the merged part is written under a temporary name, the record of
    what it replaces is written next, and only then is the merged part renamed into place; readers
    skip the replaced parts once the merged one is listed (result_parts). The replaced parts are
    deleted by the next compaction once grace_s has passed (at once with grace_s=0, for when no
    reader runs). The merged part is sorted by (hookpoint, latent) and then in the order "latest
    wins" reads (created_at, the part's name, the row in it), so it picks the same row before and
    after, and a latent's history reads one small row group."""
    d = run_dir / "results" / kind
    if not d.is_dir():
        return 0
    with open(d / ".compaction.lock", "a") as lock:
        try:  # one compaction per folder at a time; another one running means there is nothing to do
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        remove_stale_temp(d)
        if not _finish_compaction(d, kind, grace_s):
            return 0
        return _merge_parts(run_dir, d, kind, grace_s, memory_limit)


def _finish_compaction(d: Path, kind: str, grace_s: float) -> bool:
    """Delete what the last compaction replaced, once grace_s has passed since it; False while
    they must stay."""
    record = _compaction_record(d)
    if record is None:
        return True
    if (d / record["merged"]).exists():
        if time.time() - record["at"] < grace_s:
            log.info("results/%s: the last compaction's replaced parts stay %.0f s more for readers", kind,
                     grace_s - (time.time() - record["at"]))
            return False
        for i, name in enumerate(record["replaced"]):
            (d / name).unlink(missing_ok=True)
            if i == 0:
                fault_point("compaction-removing")
    (d / COMPACTION_RECORD).unlink()
    return True


def _merge_parts(run_dir: Path, d: Path, kind: str, grace_s: float, memory_limit: str) -> int:
    parts = result_parts(run_dir, kind)
    if len(parts) < 2:
        return 0
    merged = f"{parts[-1].name.removesuffix('.parquet').split('-compact')[0]}-compact-{time.time_ns()}.parquet"
    tmp = d / f"{tmp_prefix()}{merged}"
    files = _sql_list(parts)
    # Sorted by latent first, so a latent's history reads one small row group (zone maps skip the
    # rest); within a latent, in "latest wins" order, which is all that order decides.
    keys = [k for k in ("hookpoint", "latent", "created_at") if k in RESULT_SCHEMAS[kind].names]
    order = ", ".join([*keys, "filename", "file_row_number"])
    con = connect(memory_limit, temp_dir=run_dir / ".duckdb-tmp")
    try:
        con.execute(f"COPY (SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet({files}, {NEWEST_FIRST_READ}) "
                    f"ORDER BY {order}) TO '{tmp}' "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {COMPACTED_ROW_GROUP_ROWS})")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    fault_point("compaction-merged")
    atomic_write_json(d / COMPACTION_RECORD, {"merged": merged, "replaced": [p.name for p in parts], "at": time.time()})
    fault_point("compaction-recorded")
    os.replace(tmp, d / merged)
    fault_point("compaction-renamed")
    log.info("results/%s: %d parts merged into %s", kind, len(parts), merged)
    if grace_s <= 0:
        _finish_compaction(d, kind, 0.0)
    return len(parts)


def result_part_counts(run_dir: Path) -> dict[str, int]:
    """{kind: parts a query reads} for every result kind."""
    return {kind: len(result_parts(run_dir, kind)) for kind in RESULT_SCHEMAS}


def compact_run(run_dir: Path, grace_s: float = COMPACT_GRACE_S) -> dict[str, int]:
    """compact_results for every result kind of a run: {kind: parts merged}."""
    return {kind: compact_results(run_dir, kind, grace_s) for kind in RESULT_SCHEMAS}


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


def _q(column: str) -> str:
    """A stored column's name quoted for SQL."""
    return '"' + column.replace('"', '""') + '"'


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
        # parts are never rewritten (compaction writes a new name), so a list of parts keeps its columns
        cache = self.__dict__.setdefault("_columns_of_parts", {})
        if src not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[src] = set(self._sql(f"DESCRIBE SELECT * FROM read_parquet({src}, union_by_name = true)").column_name)
        return cache[src]

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

    def current_explanations(self, hookpoint: str | None = None, kind: str = "input",
                             columns: list[str] | None = None, latents: list[int] | None = None) -> pd.DataFrame:
        """Per (hookpoint, latent) its current explanation: the latest one that did not fail. A
        latent whose newest attempt failed keeps its last good explanation; `newest_failed` and
        `newest_error` say so. Latents that never got a good explanation have no row. `columns`:
        only these of the stored ones (and hookpoint, latent), e.g. no raw LLM answers for 131k rows;
        `latents`: only these latent ids (in `hookpoint`, or in every set), e.g. a search's hits."""
        cte = self._current_explanations_sql(hookpoint, kind, latents)
        if cte is None:
            empty = _empty("explanations").assign(newest_failed=pd.Series(dtype=bool), newest_error=None)
            return empty if columns is None else empty[["hookpoint", "latent", *columns, "newest_failed",
                                                        "newest_error"]]
        sql, params = cte
        stored = "good.* EXCLUDE (filename, file_row_number)" if columns is None else ", ".join(
            f'good."{c}"' for c in dict.fromkeys(["hookpoint", "latent", *columns]))
        rows = self._sql(f"""WITH {sql}
            SELECT {stored}, newest.newest_failed,
                   CASE WHEN newest.newest_failed THEN newest.newest_error END AS newest_error
            FROM good JOIN newest USING (hookpoint, latent) ORDER BY hookpoint, latent""", params)
        return _nulls_to_none(rows, "explanations")

    def _current_explanations_sql(self, hookpoint: str | None, kind: str,
                                  latents: list[int] | None = None) -> tuple[str, list] | None:
        """CTEs `good` (latest non-failed explanation per latent) and `newest` (latest attempt, and
        whether it failed), with their parameters; None when nothing was explained."""
        src = _results_glob(self.run_dir, "explanations")
        if src is None:
            return None
        cond, params = self._kind_filter("explanations", src, kind)
        hp = " AND hookpoint = ?" if hookpoint else ""
        if latents is not None:  # integers only: safe to inline, and DuckDB prunes row groups by them
            hp += f" AND latent IN ({', '.join(str(int(x)) for x in latents) or 'NULL'})"
        return (f"""e AS (SELECT * FROM read_parquet({src}, {NEWEST_FIRST_READ}) WHERE {cond}{hp}),
            good AS (SELECT * FROM e WHERE explanation IS NOT NULL
                     QUALIFY row_number() OVER (PARTITION BY hookpoint, latent ORDER BY {NEWEST_FIRST}) = 1),
            newest AS (SELECT hookpoint, latent, explanation IS NULL AS newest_failed, error AS newest_error FROM e
                       QUALIFY row_number() OVER (PARTITION BY hookpoint, latent ORDER BY {NEWEST_FIRST}) = 1)""",
                params + ([hookpoint] if hookpoint else []))

    def unindexed_explanations(self, hookpoint: str, embedder: str) -> pd.DataFrame:
        """(latent, explanation, text_md5) of the set's current (input) explanations whose text is
        not in its search index, or all of them when the index holds another embedder's vectors."""
        cte = self._current_explanations_sql(hookpoint, "input")
        if cte is None:
            return pd.DataFrame({"latent": pd.Series(dtype="int64"), "explanation": pd.Series(dtype=object),
                                 "text_md5": pd.Series(dtype=object)})
        sql, params = cte
        record = record_path(self.run_dir, hookpoint)
        anti = ""
        if record.exists():
            anti = (f"ANTI JOIN (SELECT latent, text_md5 FROM read_parquet({_sql_list([record])}) WHERE embedder = ?) r "
                    f"ON r.latent = g.latent AND r.text_md5 = g.text_md5")
            params = params + [embedder]
        return self._sql(f"""WITH {sql}, g AS (SELECT latent, explanation, md5(explanation) AS text_md5 FROM good)
                             SELECT g.* FROM g {anti} ORDER BY g.latent""", params)

    def current_scores(self, hookpoint: str | None = None, kind: str = "input",
                       columns: list[str] | None = None) -> pd.DataFrame:
        """Latest score per (hookpoint, latent, scorer) of the latent's current explanation only
        (one query): a score of an earlier explanation is never shown beside a newer one (it stays
        in the latent's history). Every view, export and analysis reads these. `columns`: only
        these (and hookpoint, latent, scorer), for views of 100k+ latents that need no text."""
        cte = self._current_scores_sql(hookpoint, kind)
        if cte is None:
            return _empty("scores") if columns is None else _empty("scores")[self._keep(columns, None)]
        sql, params, src = cte
        select = "*" if columns is None else ", ".join(f'"{c}"' for c in self._keep(columns, src))
        rows = self._sql(f"WITH {sql} SELECT {select} FROM current ORDER BY hookpoint, latent, scorer", params)
        return _nulls_to_none(rows, "scores")

    def _keep(self, columns: list[str], src: str | None) -> list[str]:
        have = self._columns(src) if src is not None else {f.name for f in RESULT_SCHEMAS["scores"]}
        return list(dict.fromkeys(["hookpoint", "latent", "scorer", *[c for c in columns if c in have]]))

    def _current_scores_sql(self, hookpoint: str | None, kind: str) -> tuple[str, list, str] | None:
        """CTEs ending in `current` (the current scores, every stored column), their parameters,
        and the parts read; None when nothing was scored."""
        src = _results_glob(self.run_dir, "scores")
        if src is None:
            return None
        # scores of explanation-free scorers (intruder) judge the latent: current whatever it shows
        cte = self._current_explanations_sql(hookpoint, kind) or (
            "good AS (SELECT NULL::VARCHAR AS hookpoint, NULL::INTEGER AS latent, NULL::VARCHAR AS explanation "
            "WHERE FALSE)", [])
        sql, params = cte
        cond, kind_params = self._kind_filter("scores", src, kind)
        hp = " AND s.hookpoint = ?" if hookpoint else ""
        free = ", ".join("?" for _ in EXPLANATION_FREE)
        return (f"""{sql},
            current AS (SELECT s.* EXCLUDE (filename, file_row_number)
            FROM read_parquet({src}, {NEWEST_FIRST_READ}) s
            LEFT JOIN good ON s.hookpoint = good.hookpoint AND s.latent = good.latent
            WHERE (s.explanation = good.explanation OR s.scorer IN ({free})) AND {cond}{hp}
            QUALIFY row_number() OVER (PARTITION BY s.hookpoint, s.latent, s.scorer
                                       ORDER BY s.created_at DESC, s.filename DESC, s.file_row_number DESC) = 1)""",
                params + list(EXPLANATION_FREE) + kind_params + ([hookpoint] if hookpoint else []), src)

    def _score_pivot(self, metrics: dict[str, tuple[str, ...]], default: tuple[str, ...], hookpoint: str | None,
                     kind: str, bounds: bool) -> tuple[str, list, list[str]] | None:
        """SQL of the current scores pivoted to one row per (hookpoint, latent) with per scorer i
        its headline v{i}, whether it has a current score h{i} and (`bounds`) lo{i} / hi{i}; its
        parameters; the scorers in column order. None when nothing was scored."""
        cte = self._current_scores_sql(hookpoint, kind)
        if cte is None:
            return None
        sql, params, src = cte
        stored = sorted(self._sql(f"SELECT DISTINCT scorer FROM read_parquet({src}, union_by_name = true)").scorer)
        scorers = [x for x in metrics if x in stored] + [x for x in stored if x not in metrics]
        have = self._columns(src)
        cols, col_params = [], []
        for i, scorer in enumerate(scorers):
            names = [m for m in metrics.get(scorer, default) if m in have]
            value = f"coalesce({', '.join(f'{_q(m)}::DOUBLE' for m in names)})" if names else "NULL::DOUBLE"
            cols += [f"max(CASE WHEN scorer = ? THEN {value} END) AS v{i}", f"bool_or(scorer = ?) AS h{i}"]
            col_params += [scorer, scorer]
            if bounds:
                with_interval = [m for m in names if f"{m}_lo" in have and f"{m}_hi" in have]
                for b, bound in (("lo", "_lo"), ("hi", "_hi")):
                    pick = " ".join(f"WHEN {_q(m)} IS NOT NULL AND {_q(m + '_lo')} IS NOT NULL THEN "
                                    f"{_q(m + bound)}::DOUBLE" for m in with_interval)
                    cols.append(f"max(CASE WHEN scorer = ? THEN {f'CASE {pick} END' if pick else 'NULL::DOUBLE'} END)"
                                f" AS {b}{i}")
                    col_params.append(scorer)
        return (f"WITH {sql} SELECT hookpoint, latent, {', '.join(cols)} FROM current GROUP BY hookpoint, latent",
                params + col_params, scorers)

    def current_score_table(self, metrics: dict[str, tuple[str, ...]], default: tuple[str, ...],
                            hookpoint: str | None = None, kind: str = "input", bounds: bool = False) -> pd.DataFrame:
        """One row per scored (hookpoint, latent), one column per scorer that has a current score,
        holding the first non-null of its metrics (`metrics[scorer]`, else `default`): the
        headline, pivoted in DuckDB, so a million scored latents never pass through pandas as
        score rows. Columns in the order of `metrics`, then other scorers by name. `bounds`: also
        `<scorer> low` / `<scorer> high`, the 95% interval of the first of its metrics that has a
        value and a stored interval (NaN where none was stored), after each scorer's column."""
        pivot = self._score_pivot(metrics, default, hookpoint, kind, bounds)
        if pivot is None:
            return pd.DataFrame(columns=["hookpoint", "latent"])
        sql, params, scorers = pivot
        table = self._sql(f"{sql} ORDER BY hookpoint, latent", params)
        out = {"hookpoint": table.hookpoint, "latent": table.latent}
        for i, scorer in enumerate(scorers):
            if table[f"h{i}"].any():  # a scorer whose scores are all stale has no column
                out[scorer] = table[f"v{i}"].astype(float)
                if bounds:
                    out[f"{scorer} low"], out[f"{scorer} high"] = table[f"lo{i}"].astype(float), table[f"hi{i}"].astype(float)
        return pd.DataFrame(out)

    def current_decile_accuracy(self, hookpoint: str | None = None, kind: str = "input") -> pd.DataFrame:
        """(scorer, decile, accuracy): per scorer and activation decile the mean over latents of the
        current scores' per-decile accuracies (the accuracy_per_decile JSON, unnested in DuckDB;
        null accuracies left out), so a million scores are never parsed row by row in Python."""
        cte = self._current_scores_sql(hookpoint, kind)
        empty = pd.DataFrame({"scorer": pd.Series(dtype=object), "decile": pd.Series(dtype="int64"),
                              "accuracy": pd.Series(dtype=float)})
        if cte is None or "accuracy_per_decile" not in self._columns(cte[2]):
            return empty
        sql, params, _ = cte
        return self._sql(f"""WITH {sql}, per AS (
                SELECT scorer, j.key::INTEGER AS decile, j.value::DOUBLE AS accuracy
                FROM current, json_each(accuracy_per_decile) j WHERE accuracy_per_decile IS NOT NULL)
            SELECT scorer, decile, avg(accuracy) AS accuracy FROM per WHERE accuracy IS NOT NULL
            GROUP BY scorer, decile ORDER BY scorer, decile""", params)

    def current_score_means(self, metrics: dict[str, tuple[str, ...]], default: tuple[str, ...],
                            kind: str = "input") -> pd.DataFrame:
        """Per latent set: `scored` (latents with a current score) and per scorer the mean of its
        headline over them (columns as current_score_table's), aggregated in DuckDB."""
        pivot = self._score_pivot(metrics, default, None, kind, False)
        if pivot is None:
            return pd.DataFrame(columns=["hookpoint", "scored"])
        sql, params, scorers = pivot
        aggs = ", ".join(f"avg(v{i}) AS v{i}, bool_or(h{i}) AS h{i}" for i in range(len(scorers)))
        table = self._sql(f"SELECT hookpoint, count(*) AS scored, {aggs} FROM ({sql}) GROUP BY hookpoint "
                          f"ORDER BY hookpoint", params)
        out = {"hookpoint": table.hookpoint, "scored": table.scored}
        for i, scorer in enumerate(scorers):
            if table[f"h{i}"].any():
                out[scorer] = table[f"v{i}"].astype(float)
        return pd.DataFrame(out)

    def explanation_counts(self, kind: str = "input") -> pd.DataFrame:
        """Per latent set: latents with a current explanation, and latents whose newest attempt
        failed (counted in DuckDB)."""
        cte = self._current_explanations_sql(None, kind)
        if cte is None:
            return pd.DataFrame({"hookpoint": pd.Series(dtype=str), "explained": pd.Series(dtype=int),
                                 "failed": pd.Series(dtype=int)})
        sql, params = cte
        return self._sql(f"""WITH {sql},
            explained AS (SELECT hookpoint, count(*) AS explained FROM good GROUP BY hookpoint),
            failed AS (SELECT hookpoint, count(*) FILTER (WHERE newest_failed) AS failed FROM newest GROUP BY hookpoint)
            SELECT hookpoint, coalesce(explained, 0) AS explained, coalesce(failed, 0) AS failed
            FROM failed FULL JOIN explained USING (hookpoint) ORDER BY hookpoint""", params)

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

    def results_version(self, kind: str = "*") -> float:
        """Changes whenever a results part (of `kind`, or any) lands (for caches that must see new results)."""
        n, newest = 0, 0.0
        for part in (self.run_dir / "results").glob(f"{kind}/part-*.parquet"):
            try:  # a compaction may remove a part between the listing and here
                newest = max(newest, part.stat().st_mtime)
                n += 1
            except FileNotFoundError:
                continue
        return n + newest

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
        cte = self._current_scores_sql(hookpoint, kind) if _results_glob(self.run_dir, "interventions") else None
        if cte is None:  # no steering results at all (most runs): no query over every current score
            return _empty("interventions")
        sql, params, _ = cte
        ids = self._sql(f"WITH {sql} SELECT score_id FROM current WHERE scorer = 'intervention'", params
                        ).score_id.tolist()
        if not ids:
            return _empty("interventions")
        return self._rows("interventions", "list_contains(?, score_id)", [ids], "hookpoint, latent, target_kl")

    def intervention_examples(self, score_id: str) -> pd.DataFrame:
        """The prompts, clean and steered continuations and log-probabilities behind one score."""
        return self._rows("intervention_examples", "score_id = ?", [score_id], "target_kl, direction, prompt")

    def decisions(self, score_id: str) -> pd.DataFrame:
        return self._rows("decisions", "score_id = ?", [score_id], "activating DESC, quantile DESC, doc_id, start")
