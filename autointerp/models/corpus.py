"""Corpus loading and tokenization into fixed-length contexts.

Every context starts with the tokenizer's BOS token: the first position of a sequence is an
attention sink whose residual norm is ~100x the others, so it is never trained on or cached, and
putting a BOS there means every real token gets a normal position.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from autointerp.core.errors import AutointerpError
from autointerp.core.paths import wiki_summaries_json

log = logging.getLogger(__name__)

EMBEDDED_CORPORA = ("wiki",)


def load_texts(corpus: str) -> list[str]:
    """Documents of a corpus: `wiki` (10k Wikipedia summaries shipped offline), a .txt file (one
    document per line), a .jsonl file (a `text` field per line) or a .json list of strings."""
    if corpus == "wiki":
        data = json.loads(wiki_summaries_json().read_text())
        texts = [v.get("extract", "") for v in data.values()]
    else:
        path = Path(corpus)
        if not path.is_file():
            raise AutointerpError(f"corpus {corpus!r} is neither 'wiki' nor an existing file: check the path")
        if path.suffix == ".jsonl":
            texts = [json.loads(line).get("text", "") for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            texts = [t if isinstance(t, str) else t.get("text", "") for t in json.loads(path.read_text())]
        else:
            texts = path.read_text().splitlines()
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise AutointerpError(f"corpus {corpus!r} contains no text: give a file with at least one non-empty document")
    return texts


def tokenize_contexts(texts: list[str], tokenizer, ctx_len: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    """[n_contexts, 1 + ctx_len] int32 token ids: documents shuffled (seeded), joined with EOS, cut
    into contexts of BOS + ctx_len tokens, n_contexts = ceil(n_tokens / ctx_len)."""
    if ctx_len < 1:
        raise AutointerpError(f"context length {ctx_len} is too short: use at least 1")
    n_ctx = max(1, -(-n_tokens // ctx_len))
    body = ctx_len
    need = n_ctx * body
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    stream: list[int] = []
    for start in range(0, len(order), 256):
        batch = [texts[i] for i in order[start:start + 256]]
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
        if len(stream) >= need:
            break
    if not stream or all(t == eos for t in stream):
        raise AutointerpError("corpus tokenized to nothing: give documents with text the tokenizer can encode")
    if len(stream) < need:
        n_ctx = len(stream) // body
        if n_ctx == 0:
            n_ctx, stream = 1, stream + [eos] * (body - len(stream))
        log.warning("corpus holds only %d contexts of %d tokens; using all of it", n_ctx, body)
    arr = np.asarray(stream[: n_ctx * body], dtype=np.int32).reshape(n_ctx, body)
    return np.concatenate([np.full((n_ctx, 1), bos, dtype=np.int32), arr], axis=1)
