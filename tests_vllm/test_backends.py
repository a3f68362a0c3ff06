import time

import numpy as np
import pytest

from autointerp.core.errors import AutointerpError
from autointerp.llm.base import LLMConfig
from autointerp.explain.prompts import ANSWERS

SYSTEM = {"role": "system", "content": "You judge whether a text is about the given topic."}
TEXTS = ["The Rhine flows into the North Sea.", "In 1998 the treaty was signed.", "The orchestra played Mozart.",
         "Lake Baikal is the deepest lake.", "Bananas are rich in potassium.", "The Nile is a long river."]
PROMPTS = [[SYSTEM, {"role": "user", "content": f"Topic: rivers, lakes and seas\nExample 1: {t}\nAnswer per example."}]
           for t in TEXTS]
PREFIXES = ["Example 1:"] * len(TEXTS)
LOSS_PROMPT = "The following text was chosen because it contains rivers:\n"


def _openai(url, **kw):
    from autointerp.llm.openai_backend import OpenAIClient

    return OpenAIClient(LLMConfig(backend="openai", model="smollm2", base_url=url, **kw))


def test_vllm_engine_generates(vllm_client):
    [text] = vllm_client.generate([[{"role": "user", "content": "What is the capital of France? One word."}]],
                                  max_tokens=10)
    assert "Paris" in text


def test_vllm_engine_probabilities_and_losses_match_transformers(vllm_client, reference):
    got = np.array(vllm_client.answer_probs(PROMPTS, list(ANSWERS), PREFIXES))
    ref = np.array(reference.answer_probs(PROMPTS, list(ANSWERS), PREFIXES))
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-6)
    assert np.abs(got - ref).max() < 0.1  # bf16 engine vs float32 reference
    losses = vllm_client.token_losses([LOSS_PROMPT] * 3, TEXTS[:3])
    ref_losses = reference.token_losses([LOSS_PROMPT] * 3, TEXTS[:3])
    assert [len(x) for x in losses] == [len(x) for x in ref_losses]
    assert abs(np.mean(np.concatenate(losses)) - np.mean(np.concatenate(ref_losses))) < 0.15


def test_openai_backend_against_a_real_server(server_url, reference):
    client = _openai(server_url)
    [text] = client.generate([[{"role": "user", "content": "What is the capital of France? One word."}]],
                             max_tokens=10)
    assert "Paris" in text
    got = client.answer_probs(PROMPTS, list(ANSWERS), PREFIXES)
    ref = np.array(reference.answer_probs(PROMPTS, list(ANSWERS), PREFIXES))
    assert all(p is not None for p in got)
    # An answer outside the server's top-20 logprobs gets probability 0 (documented); where both
    # answers are in the top 20 the probabilities must match the transformers reference.
    both = [i for i, p in enumerate(got) if 0 < p[0] < 1]
    assert len(both) >= 2
    assert np.abs(np.array([got[i] for i in both]) - ref[both]).max() < 0.15
    losses = client.token_losses([LOSS_PROMPT] * 2, TEXTS[:2])
    ref_losses = reference.token_losses([LOSS_PROMPT] * 2, TEXTS[:2])
    assert [len(x) for x in losses] == [len(x) for x in ref_losses]
    assert abs(np.mean(np.concatenate(losses)) - np.mean(np.concatenate(ref_losses))) < 0.15


def test_openai_answers_missing_from_logprobs_are_failures(server_url):
    client = _openai(server_url)
    assert client.answer_probs(PROMPTS[:1], ["Zyzzyva", "Quokkapedia"]) == [None]


def test_unreachable_server_is_a_one_line_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = _openai(f"http://127.0.0.1:{port}/v1", max_retries=1, timeout_s=2)
        t0 = time.time()
        with pytest.raises(AutointerpError, match="unreachable") as e:
            client.generate([[{"role": "user", "content": "hi"}]])
    assert "\n" not in str(e.value) and time.time() - t0 < 30


def test_openai_requests_in_flight_keep_their_order(server_url):
    """batch_size requests go out concurrently (batched scoring sends a chunk's prompts in one
    call); each answer must still land at its prompt's place."""
    texts = [t * (i + 1) for i, t in enumerate(TEXTS[:3])] + TEXTS[:3]
    one = _openai(server_url, batch_size=1).token_losses([LOSS_PROMPT] * len(texts), texts)
    many = _openai(server_url, batch_size=6).token_losses([LOSS_PROMPT] * len(texts), texts)
    assert [len(x) for x in many] == [len(x) for x in one]  # texts of different lengths, in order
    for a, b in zip(one, many):
        assert abs(np.mean(a) - np.mean(b)) < 0.05
    probs_one = _openai(server_url, batch_size=1).answer_probs(PROMPTS, list(ANSWERS), PREFIXES)
    probs_many = _openai(server_url, batch_size=6).answer_probs(PROMPTS, list(ANSWERS), PREFIXES)
    assert np.abs(np.array(probs_one, dtype=float) - np.array(probs_many, dtype=float)).max() < 0.05
