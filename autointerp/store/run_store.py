"""RunStore: one run's activations, tokens and results, read through DuckDB views."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from autointerp.core.errors import AutointerpError
from autointerp.store.examples import SPECIAL_TOKEN_MARK, Example, latent_seed
from autointerp.store.files import TOKENS_NPY, connect
from autointerp.store.results import ResultsMixin

log = logging.getLogger(__name__)

LATENT_SORT_COLUMNS = ("latent", "count", "frequency", "max_act", "mean_act")


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
            con = connect("1GB")
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
        return self._picked_windows(hookpoint, latent, {order: self._pick(order, limit, n_quantiles, seed, keep)},
                                    [skip] if skip and order == "quantiles" else [])

    @staticmethod
    def _pick(order: str, limit: int | None, n_quantiles: int | None, seed: int, keep: str = "") -> str:
        """SQL choosing windows from `win` (doc_id, w, mx) by `order`, with a quantile column q."""
        # DuckDB's multi-argument hash keeps the order for nearby seeds; a hashed string mixes well.
        shuffle = f"hash(doc_id::VARCHAR || ':' || w::VARCHAR || ':{int(seed)}')"
        if order == "top":
            return f"SELECT *, NULL::INTEGER AS q FROM win ORDER BY mx DESC, doc_id, w LIMIT {int(limit)}"
        if order == "random":
            return f"SELECT *, NULL::INTEGER AS q FROM win ORDER BY {shuffle} LIMIT {int(limit)}"
        if order == "quantiles":
            return f"""SELECT doc_id, w, mx, q FROM (
                           SELECT *, row_number() OVER (PARTITION BY q ORDER BY {shuffle}) AS r
                           FROM (SELECT *, ntile({int(n_quantiles)}) OVER (ORDER BY mx, doc_id, w) AS q FROM win)
                           {keep})
                       WHERE r <= {int(limit)}"""
        raise ValueError(order)

    def _picked_windows(self, hookpoint: str, latent: int, picks: dict[str, str], params: list) -> pd.DataFrame:
        """The windows each pick chooses (column `pick` names it) with their activations, from one
        scan of the latent's rows however many picks share it."""
        w = self.window
        chosen = " UNION ALL ".join(f"SELECT '{name}' AS pick, * FROM ({sql})" for name, sql in picks.items())
        return self._sql(f"""
            WITH a AS (SELECT doc_id, pos, value, (pos - 1) // {w} AS w
                       FROM {self._acts(hookpoint)} WHERE latent = ?),
                 win AS (SELECT doc_id, w, max(value) AS mx FROM a GROUP BY doc_id, w),
                 chosen AS ({chosen})
            SELECT c.pick, c.doc_id, c.w, c.mx, c.q, a.pos, a.value FROM chosen c JOIN a USING (doc_id, w)""",
                         [int(latent)] + params)

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
        return _by_activation(self._to_examples(self._windows(hookpoint, latent, "top", n)))

    def top_and_quantile_examples(self, hookpoint: str, latent: int, n_top: int = 20, n_quantiles: int = 10,
                                  per_quantile: int = 5, seed: int = 0) -> tuple[list[Example], list[Example]]:
        """top_examples and quantile_examples from one scan of the latent's rows (the Latent page)."""
        df = self._picked_windows(hookpoint, latent, {"top": self._pick("top", n_top, None, seed),
                                                      "quantiles": self._pick("quantiles", per_quantile,
                                                                              n_quantiles, seed)}, [])
        top, quantiles = (self._to_examples(df[df.pick == p]) for p in ("top", "quantiles"))
        return _by_activation(top), _by_quantile(quantiles)

    def random_examples(self, hookpoint: str, latent: int, n: int = 20, seed: int = 0) -> list[Example]:
        ex = self._to_examples(self._windows(hookpoint, latent, "random", n, seed=seed))
        return sorted(ex, key=lambda e: (e.doc_id, e.start))

    def quantile_examples(self, hookpoint: str, latent: int, n_quantiles: int = 10, per_quantile: int = 5,
                          seed: int = 0, exclude: list[tuple[int, int]] | None = None) -> list[Example]:
        """Activating windows sorted by max activation, cut into n_quantiles equal-count slices,
        per_quantile sampled from each (seeded) among those not in `exclude` ((doc_id, start)
        keys). Example.quantile: 1 = weakest slice."""
        return _by_quantile(self._to_examples(self._windows(hookpoint, latent, "quantiles", per_quantile,
                                                            n_quantiles=n_quantiles, seed=seed, exclude=exclude)))

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


def _by_activation(examples: list[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: (-e.max_act, e.doc_id, e.start))


def _by_quantile(examples: list[Example]) -> list[Example]:
    """Strongest quantile first, strongest window first within it."""
    return sorted(examples, key=lambda e: (-(e.quantile or 0), -e.max_act, e.doc_id))
