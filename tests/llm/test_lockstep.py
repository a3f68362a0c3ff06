"""Batched scoring: a chunk of latents' prompts reach the backend together (llm/lockstep.py), and
the scores are those of scoring each latent alone."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import numpy as np
import pytest

from autointerp.config import InterpretConfig
from autointerp.runs.interpret import score_latent
from autointerp.llm.base import LLMConfig
from autointerp.llm.lockstep import run_lockstep
from autointerp.llm.transformers_backend import TransformersClient

SET = "resid_post.2"


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    client = TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4))
    assert client.combines_latents is False  # on a CPU it scores one latent at a time (measured faster)
    client.combines_latents = True  # what it does on a GPU: the combining is the code under test
    return client


class Counting:
    """The real client, counting the calls and prompts that reach it (instrumentation, not a fake)."""

    def __init__(self, client):
        self.client, self.calls, self.prompts = client, Counter(), Counter()

    def __getattr__(self, name):
        return getattr(self.client, name)

    def _count(self, method, n):
        self.calls[method] += 1
        self.prompts[method] += n

    def generate(self, prompts, max_tokens=200, temperature=0.0):
        self._count("generate", len(prompts))
        return self.client.generate(prompts, max_tokens=max_tokens, temperature=temperature)

    def answer_probs(self, prompts, answers, assistant_prefixes=None):
        self._count("answer_probs", len(prompts))
        return self.client.answer_probs(prompts, answers, assistant_prefixes=assistant_prefixes)

    def token_losses(self, prompts, texts):
        self._count("token_losses", len(prompts))
        return self.client.token_losses(prompts, texts)

    def positional_probs(self, items, answer_ids):
        self._count("positional_probs", len(items))
        return self.client.positional_probs(items, answer_ids)


def _chosen(store, n):
    page, _ = store.latent_table(SET, sort="frequency", limit=n)
    return [int(x) for x in page.latent]


def test_a_chunk_is_scored_in_shared_calls_with_the_scores_of_one_by_one(store, tiny_llm):
    cfg = InterpretConfig(run=str(store.run_dir), hookpoint=SET, n_explain=6, test_per_quantile=1, n_negative=6,
                          scorers=["detection", "fuzzing", "surprisal", "simulation"])
    latents = _chosen(store, 4)
    texts = {x: f"numbers and dates {x}" for x in latents}
    alone_client = Counting(tiny_llm)
    alone = [score_latent(alone_client, store, SET, x, texts[x], cfg) for x in latents]
    batched_client = Counting(tiny_llm)
    jobs = [functools.partial(score_latent, store=store, hookpoint=SET, latent=x, explanation=texts[x], cfg=cfg)
            for x in latents]
    together = run_lockstep(batched_client, jobs)
    # the same prompts reach the backend, in a quarter of the calls
    assert batched_client.prompts == alone_client.prompts
    for method, n in alone_client.calls.items():
        assert batched_client.calls[method] * len(latents) == n, method
    for (s1, d1), (s2, d2) in zip(alone, together):
        assert [r["scorer"] for r in s1] == [r["scorer"] for r in s2]
        for a, b in zip(s1, s2):
            for key in ("n", "n_failed", "auroc", "balanced_accuracy", "correlation"):
                if a.get(key) is None:
                    assert b.get(key) is None
                else:
                    assert b[key] == pytest.approx(a[key], abs=1e-4), key
        assert [(r["doc_id"], r["start"]) for r in d1] == [(r["doc_id"], r["start"]) for r in d2]
        np.testing.assert_allclose([r["probability"] for r in d1], [r["probability"] for r in d2], atol=1e-4)


def test_uneven_jobs_get_their_own_answers(tiny_llm):
    """Jobs that ask different numbers of prompts, with different answer sets, or end early."""
    prompts = [[{"role": "user", "content": f"Is {w} a river?"}] for w in ("the Rhine", "1998", "Paris", "blue")]

    def job(client, k, answers):
        out = []
        for j in range(k):
            out.append(client.answer_probs(prompts[:j + 1], answers))
        return out

    counting = Counting(tiny_llm)
    got = run_lockstep(counting, [functools.partial(job, k=k, answers=a)
                                  for k, a in ((3, ["Yes", "No"]), (0, ["Yes", "No"]), (1, ["No", "Yes"]),
                                               (2, ["Yes", "No"]))])
    assert got[1] == []
    # round 1: jobs 0 and 3 share a call, job 2 (other answers) gets its own; round 2: 0 and 3; round 3: 0
    assert counting.calls["answer_probs"] == 4
    for (k, answers), result in zip(((3, ["Yes", "No"]), (1, ["No", "Yes"]), (2, ["Yes", "No"])),
                                    (got[0], got[2], got[3])):
        assert len(result) == k
        for j, probs in enumerate(result):
            np.testing.assert_allclose(probs, tiny_llm.answer_probs(prompts[:j + 1], answers), atol=1e-5)


def test_a_job_error_is_raised_after_the_others_end(tiny_llm):
    ended = []

    def good(client):
        client.answer_probs([[{"role": "user", "content": "Rivers?"}]], ["Yes", "No"])
        ended.append("good")
        return "ok"

    def bad(client):
        raise ValueError("job failed on purpose")

    def bad_backend(client):  # answers that share a first token: the backend refuses the whole call
        return client.answer_probs([[{"role": "user", "content": "Rivers?"}]], ["Yes", "Yes"])

    with pytest.raises(ValueError, match="job failed on purpose"):
        run_lockstep(tiny_llm, [good, bad, good])
    assert ended == ["good", "good"]
    with pytest.raises(ValueError, match="share a first token"):
        run_lockstep(tiny_llm, [good, bad_backend])


def test_run_score_batches_each_chunk(tiny_run, tiny_llm, fresh_copy):
    from autointerp.runs.interpret import run_score
    from autointerp.store import RunStore, append_results

    run = fresh_copy(tiny_run, "lockstep")
    store = RunStore(run)
    latents = _chosen(store, 4)
    append_results(run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": "numbers and dates",
                                          "model": "human"} for x in latents])
    cfg = InterpretConfig(run=str(run), hookpoint=SET, latents=latents, n_explain=6, test_per_quantile=1,
                          n_negative=6, scorers=["detection"], calibrate=False, chunk=4)
    counting = Counting(tiny_llm)
    rows = run_score(cfg, client=counting)
    assert len(rows) == 4 and all(r["n"] > 0 for r in rows)
    one = Counting(tiny_llm)
    again = run_score(dataclasses.replace(cfg, chunk=1, force=True), client=one)
    assert one.calls["answer_probs"] == 4 * counting.calls["answer_probs"]
    for a, b in zip(rows, again):
        assert (a["latent"], a["n"]) == (b["latent"], b["n"])
        assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-4)


def test_a_cpu_transformers_client_scores_one_latent_at_a_time(tiny_model_dir, store):
    client = Counting(TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4)))
    cfg = InterpretConfig(run=str(store.run_dir), hookpoint=SET, n_explain=6, test_per_quantile=1, n_negative=6,
                          scorers=["detection"], calibrate=False)
    latents = _chosen(store, 2)
    run_lockstep(client, [functools.partial(score_latent, store=store, hookpoint=SET, latent=x, explanation="dates",
                                            cfg=cfg) for x in latents])
    alone = Counting(client.client)
    for x in latents:
        score_latent(alone, store, SET, x, "dates", cfg)
    assert client.calls == alone.calls and client.calls["answer_probs"] >= 2
