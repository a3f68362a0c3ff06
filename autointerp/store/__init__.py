"""The run store: the only package that writes SQL.
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
  results/<kind>/part-*.parquet     append-only explanations, scores, ... (results.py)
  search/<set>/index.usearch        the explanation search's HNSW graph (search_index.py)

A latent set ("hookpoint" in the API) is one coder's latents at one hookpoint; its name is the
hookpoint for SAEs and `<hookpoint>-<kind>` for baselines.

Modules: files (atomic Parquet writes, DuckDB connections), publish (the cache's finaliser: sorted
acts.parquet and latents.parquet), examples (Example, per-latent seeds), catalogue (where runs live),
results (result schemas, append-only parts and their queries), run_store (RunStore, the read API),
search_index (the explanation search's graphs).
This file names the package's public API; everything else imports it from here.
"""

from autointerp.store.catalogue import list_runs, run_path
from autointerp.store.examples import SPECIAL_TOKEN_MARK, Example, latent_seed
from autointerp.store.files import (ACT_SCHEMA, CONTEXTS_KEY, ROW_GROUP_ROWS, TOKENS_NPY, covered_contexts,
                                    write_parquet_atomic)
from autointerp.store.publish import publish_latent_set, write_latent_stats
from autointerp.store.results import (COMPACT_GRACE_S, EXPLANATION_KINDS, RESULT_SCHEMAS, STUDY_KINDS, append_results,
                                      compact_results, compact_run, corrupt_result_parts, present,
                                      remove_stale_result_temp, result_part_counts, result_parts)
from autointerp.store.run_store import LATENT_SORT_COLUMNS, RunStore

__all__ = ["ACT_SCHEMA", "COMPACT_GRACE_S", "compact_results", "compact_run", "result_part_counts", "result_parts", "CONTEXTS_KEY", "EXPLANATION_KINDS", "LATENT_SORT_COLUMNS", "RESULT_SCHEMAS",
           "ROW_GROUP_ROWS", "SPECIAL_TOKEN_MARK", "STUDY_KINDS", "TOKENS_NPY", "Example", "RunStore",
           "append_results", "corrupt_result_parts", "covered_contexts", "latent_seed", "list_runs",
           "present", "publish_latent_set", "remove_stale_result_temp", "run_path", "write_latent_stats",
           "write_parquet_atomic"]
