"""Any OpenAI-compatible server (vLLM's api_server, llama.cpp server, OpenRouter, OpenAI) by base
URL + key + model. Timeouts and retries with exponential backoff come from the openai client.
Answer probabilities come from the top-20 logprobs of the first generated token (answers missing
from the top 20 get probability 0; if none is there, the example is a failure). An assistant-turn
prefix ("Example 3:") is sent as a final assistant message to continue, which vLLM and llama.cpp
servers honour. Token losses use the completions endpoint with echo + logprobs.

The prompts of one call go out concurrently, `batch_size` requests in flight (a server batches
concurrent requests; with batched scoring one call holds a whole chunk of latents' prompts)."""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

from autointerp.core.errors import AutointerpError
from autointerp.llm.base import LLMConfig, Message

log = logging.getLogger(__name__)


class OpenAIClient:
    def __init__(self, cfg: LLMConfig):
        import openai

        if not cfg.base_url:
            raise AutointerpError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg, self.name = cfg, f"openai:{cfg.model}@{cfg.base_url}"
        self.engine = "openai-compatible server (its own dtype and device)"
        self._errors = (openai.APIConnectionError, openai.APITimeoutError)
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key or os.environ.get("OPENAI_API_KEY")
                                    or "EMPTY", timeout=cfg.timeout_s, max_retries=cfg.max_retries)

    def _request(self, fn, **kw):
        import openai

        try:
            return fn(model=self.cfg.model, **kw)
        except self._errors as e:
            raise AutointerpError(f"LLM server at {self.cfg.base_url} is unreachable or too slow "
                                  f"({type(e).__name__} after {self.cfg.max_retries} retries): start it or fix "
                                  f"--base-url") from e
        except openai.APIStatusError as e:
            raise AutointerpError(f"LLM server at {self.cfg.base_url} refused the request (HTTP {e.status_code}): "
                                  f"{str(e.message).splitlines()[0][:200]}") from e

    def _map(self, fn, items: list) -> list:
        """fn over items, up to batch_size requests in flight, results in order; the first error
        (in order) is raised."""
        if len(items) <= 1 or self.cfg.batch_size <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.cfg.batch_size, len(items))) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]:
        return self._map(lambda m: self._request(self.client.chat.completions.create, messages=m,
                                                 max_tokens=max_tokens, temperature=temperature
                                                 ).choices[0].message.content or "", prompts)

    def answer_probs(self, prompts: list[list[Message]], answers: list[str],
                     assistant_prefixes: list[str] | None = None) -> list[list[float] | None]:
        wanted = [a.strip() for a in answers]
        prefixes = assistant_prefixes or [""] * len(prompts)
        return self._map(lambda item: self._answer_probs(item[0], item[1], wanted), list(zip(prompts, prefixes)))

    def _answer_probs(self, messages: list[Message], prefix: str, wanted: list[str]) -> list[float] | None:
        extra = {}
        if prefix:
            messages = messages + [{"role": "assistant", "content": prefix}]
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        res = self._request(self.client.chat.completions.create, messages=messages, max_tokens=1,
                            temperature=0.0, logprobs=True, top_logprobs=20, extra_body=extra or None)
        top = res.choices[0].logprobs.content[0].top_logprobs if res.choices[0].logprobs else []
        lp = {}
        for t in top:  # " Yes" and "Yes" both count as Yes; the likelier spelling wins
            key = t.token.strip()
            if key in wanted and key not in lp:
                lp[key] = t.logprob
        if not lp:
            return None
        w = [math.exp(lp[a]) if a in lp else 0.0 for a in wanted]
        return [x / sum(w) for x in w]

    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        return self._map(lambda pt: self._token_losses(*pt), list(zip(prompts, texts)))

    def _token_losses(self, prompt: str, text: str) -> list[float]:
        res = self._request(self.client.completions.create, prompt=prompt + text, max_tokens=0, echo=True,
                            logprobs=1, temperature=0.0)
        lp = res.choices[0].logprobs
        return [-x for x, off in zip(lp.token_logprobs, lp.text_offset) if off >= len(prompt) and x is not None]
