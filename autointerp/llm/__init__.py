"""LLM clients behind one protocol (see base.py): transformers (the CPU default), vllm (offline
engine in a worker process), openai (any OpenAI-compatible server)."""

from autointerp.core.errors import AutointerpError
from autointerp.llm.base import LLMConfig

BACKENDS = ("transformers", "vllm", "openai")


def engine_of(client) -> str | None:
    """The engine a client computes with (backend, dtype, device), stored beside every result."""
    return getattr(client, "engine", None) if client is not None else None


def make_client(cfg: LLMConfig):
    if cfg.backend == "transformers":
        from autointerp.llm.transformers_backend import TransformersClient

        return TransformersClient(cfg)
    if cfg.backend == "vllm":
        from autointerp.llm.vllm_backend import VLLMClient

        return VLLMClient(cfg)
    if cfg.backend == "openai":
        from autointerp.llm.openai_backend import OpenAIClient

        return OpenAIClient(cfg)
    raise AutointerpError(f"unknown LLM backend {cfg.backend!r}: use one of {', '.join(BACKENDS)}")
