"""Numbers the app shows, each checked against a case where the right answer is known (issue 20,
part A): decisions that ignore an explanation-wide shift, labels for results written under an
old rule, simulation's decisions shown as not applicable, and "latest wins" in UTC with a
deterministic tie-break."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from autointerp.score.metrics import Decision, summarize
from autointerp.score.classify import DECISION_RULE_RANK, rank_decisions
from autointerp.store import RunStore, append_results
from autointerp.app.views import OLD_LOGPROB_RULE, decision_rule_label, decisions_view, latent_scores_table


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("offset", [-2.0, 0.0, 0.3, 2.0])
def test_decisions_ignore_an_explanation_wide_shift_of_the_logits(offset):
    """A scorer that ranks perfectly (signal +0.2 logit on activating windows) with an explanation-
    wide offset: the rank rule gives balanced accuracy 1.0 and per-decile accuracy 1.0 at every
    offset; the old P > 0.5 cut gave 0.5 at +0.3 (every window called activating)."""
    rng = np.random.default_rng(0)
    labels = [True] * 20 + [False] * 20
    quantiles = [1 + i // 2 for i in range(20)] + [0] * 20
    logits = [offset + 0.2 * y + rng.uniform(0, 0.05) for y in labels]  # separable: signal > noise range
    probs = [_sigmoid(x) for x in logits]
    preds = rank_decisions(probs, labels)
    s = summarize([Decision(y, p, q_, q) for y, p, q_, q in zip(labels, preds, probs, quantiles)])
    assert s["auroc"] == 1.0 and s["balanced_accuracy"] == 1.0
    assert set(s["accuracy_per_decile"].values()) == {1.0}
    old = summarize([Decision(y, q_ > 0.5, q_, q) for y, q_, q in zip(labels, probs, quantiles)])
    if offset == 0.3:  # the bug, reproduced: one side for everything
        assert old["balanced_accuracy"] == 0.5 and old["accuracy_per_decile"][0] == 0.0
    # failures stay failures and are not counted among the activating windows to call
    probs[0] = None
    preds = rank_decisions(probs, labels)
    assert preds[0] is None and sum(p is True for p in preds) == 19


def test_old_logprob_scores_are_labelled_and_new_rules_shown():
    assert decision_rule_label("logprob-calibrated", None) == OLD_LOGPROB_RULE
    assert decision_rule_label("logprob", None) == OLD_LOGPROB_RULE
    assert decision_rule_label("logprob-calibrated", DECISION_RULE_RANK) == DECISION_RULE_RANK
    assert decision_rule_label("similarity", None) == ""
    scores = pd.DataFrame([{"scorer": "detection", "mode": "logprob-calibrated", "auroc": 0.7,
                            "balanced_accuracy": 0.5, "f1": 0.6, "correlation": None, "n": 40, "n_failed": 0,
                            "error": None, "model": "m", "created_at": pd.Timestamp("2026-01-01")}])
    table = latent_scores_table(scores, {})  # parts written before decision_rule existed have no column
    assert table.decisions.iloc[0] == OLD_LOGPROB_RULE and table.validity.iloc[0] == "? not measured"


def test_simulation_decisions_are_not_applicable_not_wrong(tmp_path):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    base = {"score_id": "sim", "hookpoint": "h", "latent": 1, "scorer": "simulation", "start": 0, "raw": "",
            "shown": "0 0 9", "probability": 0.5}
    append_results(run, "decisions", [{**base, "doc_id": 0, "activating": True, "quantile": 3, "prediction": None,
                                       "failed": False},
                                      {**base, "doc_id": 1, "activating": False, "quantile": 0, "prediction": None,
                                       "failed": False},
                                      {**base, "doc_id": 2, "activating": True, "quantile": 1, "prediction": None,
                                       "failed": True}])
    view = decisions_view(_store(run), "sim")
    assert list(view.sort_values("doc_id").outcome) == ["n/a", "n/a", "failed"]


def _store(run):
    """A RunStore over a results-only run folder (these results need no cache)."""
    (run / "run.json").write_text(json.dumps({"name": run.name}))
    return RunStore(run)


def test_latest_wins_in_utc_with_a_deterministic_tie_break(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    # a writer in a time zone far from UTC: created_at is UTC all the same
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        path = append_results(run, "scores", [{"score_id": "a", "hookpoint": "h", "latent": 1, "scorer": "embedding",
                                               "explanation": "x", "auroc": 0.1}])
        written = pd.read_parquet(path).created_at.iloc[0]
        utc_now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        assert abs((utc_now - written).total_seconds()) < 60, (written, utc_now)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # two parts with the same created_at: the later part wins, whatever order the reader lists them in
    same = pd.Timestamp("2026-06-01 12:00:00")
    for sid, value in (("first", 0.2), ("second", 0.3)):
        append_results(run, "scores", [{"score_id": sid, "hookpoint": "h", "latent": 2, "scorer": "embedding",
                                        "explanation": "x", "auroc": value, "created_at": same}])
    store = _store(run)
    latest = store._latest("scores", "hookpoint, latent, scorer", "h", None)
    assert latest.set_index("latent").loc[2, "score_id"] == "second"
    history = store.latent_results("scores", "h", 2, explanation_kind=None)
    assert list(history.score_id) == ["second", "first"]
    assert "filename" not in latest.columns and "file_row_number" not in latest.columns


def test_scores_belong_to_the_explanation_they_scored(tiny_run, fresh_copy):
    """Explain "A", score it, re-explain "B": no view shows A's score beside B (A2). A newest
    attempt that fails keeps A and A's scores on show, with a note, and scoring uses A."""
    from autointerp.analysis import score_table
    from autointerp.config import InterpretConfig
    from autointerp.runs.interpret import open_for_scoring
    from autointerp.app.views import latent_frame, latent_page, set_summary

    run = fresh_copy(tiny_run)
    store = RunStore(run)
    hp = "resid_post.2"
    x, y = 3, 5

    def explain(latent, text, error=None):
        append_results(run, "explanations", [{"hookpoint": hp, "latent": latent, "explanation": text,
                                              "error": error, "model": "human"}])

    def score(latent, text, scorer, auroc):
        append_results(run, "scores", [{"score_id": f"{latent}-{scorer}-{auroc}", "hookpoint": hp, "latent": latent,
                                        "scorer": scorer, "explanation": text, "auroc": auroc, "n": 40,
                                        "n_failed": 0}])

    explain(x, "A")
    score(x, "A", "detection", 0.93)
    score(x, "A", "embedding", 0.61)
    row = latent_frame(store, hp).set_index("latent").loc[x]
    assert (row.explanation, row.detection, row.embedding) == ("A", 0.93, 0.61)
    explain(x, "B")
    frame = latent_frame(store, hp).set_index("latent")
    assert frame.loc[x, "explanation"] == "B" and np.isnan(frame.loc[x].get("detection", np.nan))
    assert score_table(store, hp).empty and latent_page(store, hp, x).scores.empty
    assert set_summary(store).set_index("latent set").loc[hp, "scored"] == 0
    # rescoring one scorer of B never mixes A's other score into B's row
    score(x, "B", "embedding", 0.55)
    row = latent_frame(store, hp).set_index("latent").loc[x]
    assert row.embedding == 0.55 and np.isnan(row.get("detection", np.nan))
    # the newest attempt fails: B and B's score stay on show, flagged; scoring uses B
    explain(x, None, error="unparseable explainer answer")
    row = latent_frame(store, hp).set_index("latent").loc[x]
    assert (row.explanation, row.embedding, row["newest failed"]) == ("B", 0.55, True)
    assert list(latent_page(store, hp, x).scores.scorer) == ["embedding"]
    # a latent whose only attempt failed has no current explanation
    explain(y, None, error="unparseable explainer answer")
    _, _, _, current = open_for_scoring(InterpretConfig(run=str(run), hookpoint=hp, latents=[x, y],
                                                        scorers=["embedding"]))
    assert current == {x: "B"}


def test_per_score_intervals_cover_the_true_value():
    """DeLong AUROC and balanced-accuracy intervals at the default test size (20 activating, 20
    silent windows) hold about 95 % coverage over 500 simulated latents with a known true AUROC."""
    from scipy.stats import norm

    from autointerp.score.metrics import auroc_ci, balanced_accuracy_ci

    rng = np.random.default_rng(1)
    shift = 0.6
    true_auroc = norm.cdf(shift / np.sqrt(2))
    hits_auroc = hits_ba = 0
    widths = []
    for _ in range(500):
        pos, neg = rng.normal(shift, 1, 20), rng.normal(0, 1, 20)
        lo, hi = auroc_ci(np.r_[np.ones(20, bool), np.zeros(20, bool)], np.r_[pos, neg])
        hits_auroc += lo <= true_auroc <= hi
        widths.append(hi - lo)
        cut = shift / 2  # a fixed rule whose balanced accuracy is known: both rates = Phi(shift / 2)
        tp, tn = int((pos > cut).sum()), int((neg <= cut).sum())
        ba_lo, ba_hi = balanced_accuracy_ci(tp, 20 - tp, tn, 20 - tn)
        hits_ba += ba_lo <= norm.cdf(shift / 2) <= ba_hi
    print(f"AUROC {true_auroc:.3f}: coverage {hits_auroc / 500:.3f}, mean width {np.mean(widths):.3f}; "
          f"balanced accuracy coverage {hits_ba / 500:.3f}")
    assert 0.90 <= hits_auroc / 500 <= 0.99 and 0.90 <= hits_ba / 500 <= 0.995
    summary = summarize([Decision(True, True, 0.9, 5), Decision(True, False, 0.4, 1), Decision(False, False, 0.2),
                         Decision(False, True, 0.6), Decision(True, True, 0.8, 3), Decision(False, False, 0.1)])
    assert summary["auroc_lo"] <= summary["auroc"] <= summary["auroc_hi"]
    assert summary["balanced_accuracy_lo"] <= summary["balanced_accuracy"] <= summary["balanced_accuracy_hi"]


def test_decoder_overlap_baseline_keeps_the_sets_shared_geometry():
    """Two independent synthetic decoder sets sharing anisotropy (four enlarged dimensions and a
    common mean direction): the coordinate-shuffle baseline made them look overlapping (A4); the
    Gaussian null with B's mean and covariance matches them as well as they match each other, so
    the excess is ~0 and its interval holds 0. Truly shared directions still show a large excess."""
    from autointerp.analysis.overlap import _unit, hungarian, match_decoders

    rng = np.random.default_rng(0)
    d, n = 64, 200
    scale = np.ones(d)
    scale[:4] = 6.0
    mean = np.zeros(d)
    mean[4] = 2.0

    def draw():
        return mean + rng.standard_normal((n, d)) * scale

    a, b = draw(), draw()
    m = match_decoders(a, b, seed=1).summary()
    ub = _unit(b)
    shuffled = np.take_along_axis(ub, rng.random(ub.shape).argsort(axis=1), axis=1)
    sim = _unit(a) @ shuffled.T
    r, c = hungarian(sim)
    old_baseline = float(sim[r, c].mean())
    print(f"independent: matched {m['matched_mean']:.3f}, geometry null {m['baseline_mean']:.3f}, "
          f"shuffled {old_baseline:.3f}, excess {m['excess_mean']:+.3f} [{m['excess_lo']:.3f}, {m['excess_hi']:.3f}]")
    assert m["matched_mean"] - old_baseline > 0.1  # the old baseline's false overlap
    assert m["excess_lo"] <= 0 <= m["excess_hi"] and abs(m["excess_mean"]) < 0.03
    shared = match_decoders(a, a + 0.3 * rng.standard_normal((n, d)), seed=1).summary()
    assert shared["excess_lo"] > 0.2


def test_explanation_overlap_compares_like_with_like():
    """Unrelated explanation embeddings (A5): the Hungarian-matched similarity beats random pairs
    anyway, so the explanation row's headline is recovery against chance 1/n, and the decoder
    partners' similarity is compared with random pairs (neither maximised). Both show no excess."""
    from autointerp.analysis.overlap import _unit, match_explanations

    rng = np.random.default_rng(0)
    ea, eb = _unit(rng.standard_normal((30, 384))), _unit(rng.standard_normal((30, 384)))
    m = match_explanations(ea, eb, seed=0)
    s, p = m.summary(), m.partner_summary()
    assert s["matched_mean"] > s["random_pair_mean"] + 0.02  # what made the old comparison look positive
    assert s["baseline_mean"] == pytest.approx(1 / 30) and s["excess_lo"] <= 0 <= s["excess_hi"]
    assert p["excess_lo"] <= 0 <= p["excess_hi"]
    same = match_explanations(ea, ea, seed=0).summary()  # identical explanations: every partner recovered
    assert same["recovered"] == 1.0 and same["excess_lo"] > 0.5


def test_read_outs_go_through_the_models_own_final_logit_transforms(tmp_path, smollm2_dir):
    """A tiny random Gemma-2 with final-logit softcapping 5 (A7): P(answer) read from the hidden
    state equals the model's own logits renormalised over the answers (the old read-out skipped
    the cap), and the logit lens's final-norm gain is Gemma's (1 + weight)."""
    import torch
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    from autointerp.llm.base import LLMConfig
    from autointerp.llm.transformers_backend import TransformersClient
    from autointerp.models.logit_lens import _final_norm_gain

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                       final_logit_softcapping=5.0, pad_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg)
    with torch.no_grad():  # sizeable logits, so that the cap matters
        model.lm_head.weight.mul_(40)
        model.model.norm.weight.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "gemma2")
    tok.save_pretrained(tmp_path / "gemma2")
    client = TransformersClient(LLMConfig(model=str(tmp_path / "gemma2"), dtype="float32", batch_size=2))
    seq = client.token_ids("The river flows into the sea because")
    answers = client.answer_token_ids([" Yes", " No", " Maybe"])
    got = client.next_token_probs([seq], answers)[0]
    with torch.no_grad():
        own = client.model(input_ids=torch.tensor([seq])).logits[0, -1, answers].float()
    assert np.allclose(got, torch.softmax(own, -1).numpy(), atol=1e-5), (got, own)
    with torch.no_grad():
        uncapped = torch.softmax(client._last_hidden([seq]) @ client.model.lm_head.weight[answers].float().T, -1)[0]
        assert np.abs(np.array(got) - uncapped.numpy()).max() > 5e-4  # the cap changes the answer here
        pos = client.positional_probs([(seq, [len(seq) - 1])], answers)[0][0]
        assert np.allclose(pos, got, atol=1e-5)
        ones = torch.ones(1, 64)  # RMS 1: the norm's output is its gain
        assert torch.allclose(client.model.model.norm(ones)[0], _final_norm_gain(client.model), atol=1e-4)


def _tiny(family: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, max_position_embeddings=64)
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **common))
    if family == "gemma2":
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(num_key_value_heads=2, head_dim=8, **common))
    if family == "olmo2":
        return tf.Olmo2ForCausalLM(tf.Olmo2Config(num_key_value_heads=2, **common))
    if family == "opt":
        return tf.OPTForCausalLM(tf.OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=48, num_hidden_layers=3,
                                              num_attention_heads=4, max_position_embeddings=64,
                                              word_embed_proj_dim=32))
    if family == "mixtral":
        return tf.MixtralForCausalLM(tf.MixtralConfig(num_key_value_heads=2, num_local_experts=2,
                                                      num_experts_per_tok=1, **common))
    raise ValueError(family)


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo2", "opt"])
def test_mlp_out_is_what_the_layer_adds_to_the_residual_stream(family):
    """TransformerLens's hook_mlp_out (what sae-lens MLP SAEs read) is the MLP branch's
    contribution to the residual stream: resid_post - mlp_out must equal the layer's output with
    that MLP's down projection zeroed. Gemma 2 and OLMo 2 normalise the MLP output before adding
    it (A8: the raw MLP output was read); OPT has no `.mlp` (it did not load)."""
    import copy

    import torch

    from autointerp.models.subject import Subject, down_projection, mlp_of

    torch.manual_seed(0)
    model = _tiny(family, 128).eval()
    layer = 1
    ids = torch.randint(0, 128, (2, 12))
    subject = Subject(model, None, family)
    got = subject.activations(ids, [f"resid_post.{layer}", f"mlp_out.{layer}", f"mlp_neurons.{layer}"])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(got[f"resid_post.{layer}"], hidden[layer + 1], atol=1e-5)
    silent = copy.deepcopy(model)
    down = down_projection(mlp_of(Subject(silent, None, family).layers[layer]))
    with torch.no_grad():
        down.weight.zero_()
        if getattr(down, "bias", None) is not None:
            down.bias.zero_()
        resid_mid = silent(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    assert torch.allclose(got[f"resid_post.{layer}"] - got[f"mlp_out.{layer}"], resid_mid, atol=1e-5)
    assert got[f"mlp_neurons.{layer}"].shape[-1] == subject.d_mlp
    # mlp_in (what transcoders read) is the MLP's input: the MLP, and the norm after it where the
    # family has one, turns it into mlp_out
    mlp_in = subject.activations(ids, [f"mlp_in.{layer}"])[f"mlp_in.{layer}"]
    block = subject.layers[layer]
    with torch.no_grad():
        if hasattr(block, "mlp"):
            out = block.mlp(mlp_in)
            out = block.post_feedforward_layernorm(out) if hasattr(block, "post_feedforward_layernorm") else out
        else:  # OPT: fc1, activation, fc2 on the layer itself
            out = block.fc2(block.activation_fn(block.fc1(mlp_in)))
    assert torch.allclose(out, got[f"mlp_out.{layer}"], atol=1e-5)
    # the normalised residual where the family norms before its MLP; OLMo 2 norms only after it
    assert torch.allclose(mlp_in, resid_mid, atol=1e-5) == (family == "olmo2")


def test_mixture_of_experts_caches_resid_post_and_refuses_mlp_hookpoints_in_one_line():
    import torch

    from autointerp.core.errors import AutointerpError
    from autointerp.models.subject import Subject

    torch.manual_seed(0)
    subject = Subject(_tiny("mixtral", 128).eval(), None, "mixtral")
    got = subject.activations(torch.randint(0, 128, (1, 8)), ["resid_post.1"])
    assert got["resid_post.1"].shape == (1, 8, 32)
    for hp in ("mlp_out.1", "mlp_neurons.1"):
        with pytest.raises(AutointerpError, match="use resid_post.1") as e:
            subject.hookpoint(hp)
        assert "\n" not in str(e.value)


def test_sae_context_metadata_that_disagrees_with_our_contexts_is_named(tiny_subject, tmp_path, caplog):
    """An SAE's prepend_bos / context_size metadata is read (A8): trained without BOS or on shorter
    contexts than --ctx-len + 1, it gets a warning that names the fix."""
    from sae_lens import SAE

    from autointerp.models.coders import check_context_metadata, load_sae

    assert check_context_metadata("x", True, 65, 64) == []
    assert "--ctx-len 31" in check_context_metadata("x", True, 32, 64)[0]
    cfg = {"architecture": "topk", "d_in": 64, "d_sae": 32, "k": 4, "dtype": "float32", "device": "cpu",
           "metadata": {"hook_name": "blocks.1.hook_resid_post", "prepend_bos": False, "context_size": 128}}
    SAE.from_dict(cfg).save_model(str(tmp_path / "sae"))
    with caplog.at_level("WARNING", logger="autointerp.models.coders"):
        load_sae(str(tmp_path / "sae"))
    assert any("prepend_bos false" in r.message for r in caplog.records)
    # caching with longer contexts than the SAE was trained on names the --ctx-len that matches
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig

    short = {**cfg, "metadata": {**cfg["metadata"], "prepend_bos": True, "context_size": 17}}
    SAE.from_dict(short).save_model(str(tmp_path / "short"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="autointerp.models.coders"):
        cache_run(CacheConfig(run=str(tmp_path / "run"), model=tiny_subject.name, coders=[f"sae:{tmp_path / 'short'}"],
                              tokens=64 * 4, part_contexts=4, batch_contexts=4), subject=tiny_subject)
    assert any("--ctx-len 16" in r.message for r in caplog.records)


def test_validations_stored_before_verdicts_are_shown_as_the_old_check():
    from types import SimpleNamespace

    from autointerp.analysis.agreement import verdict_of
    from autointerp.app.views import VALIDITY_MARKS

    old = SimpleNamespace(validated=True, verdict=None)  # a part written before the sign-flip rule
    assert VALIDITY_MARKS[verdict_of(old)] == "≈ old check (over-confident)"
    assert verdict_of(SimpleNamespace(validated=False, verdict=None)) == "not validated"
    assert verdict_of(SimpleNamespace(validated=False, verdict="too few latents")) == "too few latents"
