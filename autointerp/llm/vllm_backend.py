"""vLLM offline engine (`vllm.LLM`) as a backend. The engine runs in a worker process under an
interpreter that has vllm: on CPU machines that is its own venv (`make vllm-venv` makes
.venv-vllm), on GPU machines the main one after `pip install -e '.[gpu]'`. Prompts are tokenized
here with the same tokenizer and sent as ids, so both sides see identical tokens."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

from autointerp.core.errors import AutointerpError
from autointerp.llm.base import LLMConfig, Message, TokenizerSide
from autointerp.core.paths import PROJECT_ROOT, data_dir

log = logging.getLogger(__name__)


def vllm_python(cfg: LLMConfig) -> str:
    if cfg.vllm_python:
        return cfg.vllm_python
    if os.environ.get("AUTOINTERP_VLLM_PYTHON"):
        return os.environ["AUTOINTERP_VLLM_PYTHON"]
    venv = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class VLLMClient(TokenizerSide):
    def __init__(self, cfg: LLMConfig):
        from transformers import AutoTokenizer

        from autointerp.models.subject import resolve_model_source

        source, gguf = resolve_model_source(cfg.model)
        if gguf:
            raise AutointerpError(f"vLLM loads Hugging Face folders, not GGUF files: use the embedded alias "
                                  f"or a converted folder instead of {cfg.model}")
        self.cfg, self.name = cfg, f"vllm:{cfg.model}"
        self.tok = AutoTokenizer.from_pretrained(source)
        python = vllm_python(cfg)
        import torch

        from autointerp.core.devices import resolve_dtype
        from autointerp.models.subject import model_width

        # the engine's dtype follows the same rule as every other model load (auto: measured here)
        self.dtype = resolve_dtype(cfg.dtype, "cuda" if torch.cuda.is_available() else "cpu",
                                   model_width(source, None))
        # vLLM's own logging (and any traceback) goes to a file the errors point at, not the console.
        self.engine = f"vllm {self.dtype} {'cuda' if torch.cuda.is_available() else 'cpu'}"
        self.log_path = data_dir() / "logs" / f"vllm-worker-{os.getpid()}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log_file:
            self.proc = subprocess.Popen([python, str(Path(__file__).with_name("vllm_worker.py")), str(source),
                                          self.dtype],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                         start_new_session=True)
        first = self.proc.stdout.readline()
        if not first:
            code = self.proc.wait()
            raise AutointerpError(f"the vLLM worker under {python} exited ({code}) before it was ready (log: "
                                  f"{self.log_path}): install vllm there (`make vllm-venv` on CPU machines) or set "
                                  f"AUTOINTERP_VLLM_PYTHON")
        log.info("vLLM engine ready (%s; log %s)", python, self.log_path)

    def _call(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AutointerpError(f"the vLLM worker died (exit {self.proc.wait()}); see {self.log_path}")
        reply = json.loads(line)
        if "error" in reply:
            raise AutointerpError(f"vLLM worker: {reply['error']}".splitlines()[0])
        return reply

    def reset_prefix_cache(self) -> bool:
        """Forget the engine's cached prefixes (benchmarks compare phases from a cold cache)."""
        return self._call({"op": "reset_prefix_cache"})["reset"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def generate(self, prompts: list[list[Message]], max_tokens: int = 200, temperature: float = 0.0) -> list[str]:
        ids = [self.token_ids(self.chat_text(m)) for m in prompts]
        return self._call({"op": "generate", "prompts": ids, "max_tokens": max_tokens,
                           "temperature": temperature})["texts"]

    def next_token_probs(self, seqs: list[list[int]], answer_ids: list[int]) -> list[list[float]]:
        out = []
        for lps in self._call({"op": "answer_logprobs", "prompts": seqs, "answer_ids": answer_ids})["logprobs"]:
            top = max(lps)
            w = [math.exp(x - top) for x in lps]
            out.append([x / sum(w) for x in w])
        return out

    def token_losses(self, prompts: list[str], texts: list[str]) -> list[list[float]]:
        pairs = [(self.token_ids(p), self.token_ids(t)) for p, t in zip(prompts, texts)]
        lps = self._call({"op": "token_logprobs", "prompts": [p + t for p, t in pairs]})["logprobs"]
        return [[-x for x in lp[len(p):]] for lp, (p, _) in zip(lps, pairs)]
