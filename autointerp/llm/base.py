"""The LLM client protocol shared by every backend.

Three operations cover the paper's explainer and scorers:
  generate      chat generation (explanations, generation-mode detection/fuzzing)
  answer_probs  probability of each given answer at the next position after a chat prompt,
                from one forward pass, no generation (logprob-mode detection/fuzzing, simulation)
  token_losses  per-token loss of a text that follows a prompt (surprisal)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from autointerp.config import InterpretConfig, default_of

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class LLMConfig:
    # the defaults are InterpretConfig's (the CLI's): one default per setting
    backend: str = default_of(InterpretConfig, "backend")  # transformers | vllm | openai
    model: str = default_of(InterpretConfig, "model")  # embedded alias, local folder, .gguf, or the server's name
    base_url: str | None = None  # openai backend
    api_key: str | None = None  # openai backend; default $OPENAI_API_KEY
    timeout_s: float = default_of(InterpretConfig, "timeout_s")
    max_retries: int = default_of(InterpretConfig, "max_retries")
    dtype: str = default_of(InterpretConfig, "dtype")  # auto (autointerp.core.devices.resolve_dtype), bfloat16, ...
    device: str = default_of(InterpretConfig, "device")  # transformers: auto, cpu, cuda or cuda:N
    batch_size: int = default_of(InterpretConfig, "batch_size")  # prompts per forward; openai: requests in flight
    vllm_python: str | None = None  # interpreter with vllm; default $AUTOINTERP_VLLM_PYTHON or .venv-vllm


class LLMClient(Protocol):
    name: str  # backend:model, stored with every result as `model`
    engine: str  # what computed it: backend, dtype, device (e.g. "transformers bfloat16 cpu"), stored as `engine`

    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]: ...

    def answer_probs(self, prompts: list[list[Message]], answers: list[str]) -> list[list[float]]:
        """For each prompt, P(answer_i | prompt) renormalised over the answers' first tokens."""
        ...

    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        """Per-token negative log-likelihood of each text right after its prompt."""
        ...


class TokenizerSide:
    """Prompt building shared by backends that hold the model's tokenizer (`self.tok`): chat
    templating, answer token ids, and answer_probs on top of the backend's next_token_probs."""

    tok = None

    def chat_text(self, messages: list[Message], assistant_prefix: str = "") -> str:
        """The chat-templated prompt, ending inside the assistant turn (after assistant_prefix)."""
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + assistant_prefix

    def token_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def answer_token_ids(self, answers: list[str]) -> list[int]:
        ids = [self.token_ids(a)[0] for a in answers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"answers {answers} share a first token; choose answers that differ in it")
        return ids

    def answer_probs(self, prompts: list[list[Message]], answers: list[str],
                     assistant_prefixes: list[str] | None = None) -> list[list[float]]:
        texts = [self.chat_text(m, (assistant_prefixes or [""] * len(prompts))[i]) for i, m in enumerate(prompts)]
        return self.next_token_probs([self.token_ids(t) for t in texts], self.answer_token_ids(answers))

    def next_token_probs(self, seqs: list[list[int]], answer_ids: list[int]) -> list[list[float]]:
        raise NotImplementedError
