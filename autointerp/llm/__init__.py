"""LLM clients behind one protocol (see base.py). Built: transformers (the CPU default)."""

from autointerp.errors import AutointerpError
from autointerp.llm.base import LLMConfig

BACKENDS = ("transformers",)


def make_client(cfg: LLMConfig):
    if cfg.backend == "transformers":
        from autointerp.llm.transformers_backend import TransformersClient

        return TransformersClient(cfg)
    raise AutointerpError(f"LLM backend {cfg.backend!r} is not available yet: use --backend transformers")
