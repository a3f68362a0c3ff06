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

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class LLMConfig:
    backend: str = "transformers"  # transformers | vllm | openai
    model: str = "smollm2"  # embedded alias, local folder, .gguf file, or the server's model name
    base_url: str | None = None  # openai backend
    api_key: str | None = None  # openai backend; default $OPENAI_API_KEY
    timeout_s: float = 60.0
    max_retries: int = 3
    dtype: str = "bfloat16"
    batch_size: int = 8


class LLMClient(Protocol):
    name: str

    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]: ...

    def answer_probs(self, prompts: list[list[Message]], answers: list[str]) -> list[list[float]]:
        """For each prompt, P(answer_i | prompt) renormalised over the answers' first tokens."""
        ...

    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        """Per-token negative log-likelihood of each text right after its prompt."""
        ...
