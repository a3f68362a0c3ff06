"""Intervention scoring: steering hooks, the target-KL search, greedy continuations and the scorer,
on the tiny random Llama (subject and scorer alike) and, once, the real SmolLM2. The tiny model's
next-token distribution is nearly flat, so its KL saturates near 0.02 nats: tests on it use
targets of 0.001-0.01, and a target it cannot reach checks the reached=False path."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats
import pytest
import torch

from autointerp.models.coders import RandomDirectionCoder
from autointerp.config import InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.core.faults import FAULT_ENV
from autointerp.runs.interpret import run_score
from autointerp.intervention.scorer import (PROMPT, InterventionConfig, coder_directions, latent_directions,
                                            random_direction, random_explanation, sample_prompts, unit)
from autointerp.intervention.alpha_search import MAX_ITER, find_alpha, search_alphas
from autointerp.intervention.steering import (check_lengths, greedy_continuations, mean_kl, next_token_logprobs,
                                              steering)
from autointerp.llm.base import LLMConfig
from autointerp.llm.transformers_backend import TransformersClient
from autointerp.store import RunStore, append_results
from autointerp.models.subject import down_projection
from fixture_rows import explain_as_scored

SET, NEURONS = "resid_post.2", "mlp_neurons.1-topk4"
TINY_TARGETS = [0.001, 0.003, 0.01]
UNREACHABLE = 1e6
PROMPTS = [[1] + list(range(100, 130)), [1] + list(range(200, 215)), [1] + list(range(300, 340))]


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return TransformersClient(LLMConfig(model=str(tiny_model_dir), dtype="float32", batch_size=8))


def _unit(d: int, seed: int) -> torch.Tensor:
    return unit(torch.randn(d, generator=torch.Generator().manual_seed(seed)))


def _kl(subject, hookpoint: str, vector: torch.Tensor, seqs=PROMPTS) -> float:
    return mean_kl(next_token_logprobs(subject, seqs), next_token_logprobs(subject, seqs, hookpoint, vector))


def _full_logits(subject, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return subject.model(input_ids=ids).logits


# --- steering ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("hookpoint", ["resid_post.2", "mlp_out.1", "mlp_neurons.1"])
def test_alpha_zero_is_the_clean_forward_exactly_and_the_hook_goes_away(tiny_subject, hookpoint):
    ids = torch.tensor([PROMPTS[0]])
    clean = _full_logits(tiny_subject, ids)
    module, _ = tiny_subject.hook_site(hookpoint)
    hooks_before = (len(module._forward_hooks), len(module._forward_pre_hooks))
    zero = torch.zeros(tiny_subject.hookpoint_dim(hookpoint))
    with steering(tiny_subject, hookpoint, zero):
        assert (len(module._forward_hooks), len(module._forward_pre_hooks)) != hooks_before  # it is attached
        assert torch.equal(_full_logits(tiny_subject, ids), clean)
    with steering(tiny_subject, hookpoint, 5 * _unit(zero.shape[0], 0)):
        steered = _full_logits(tiny_subject, ids)
    assert not torch.allclose(steered, clean)
    with pytest.raises(RuntimeError, match="inside"):  # removed on an exception too
        with steering(tiny_subject, hookpoint, 5 * _unit(zero.shape[0], 0)):
            raise RuntimeError("inside")
    assert (len(module._forward_hooks), len(module._forward_pre_hooks)) == hooks_before
    assert torch.equal(_full_logits(tiny_subject, ids), clean)  # a later clean forward is unchanged


@pytest.mark.parametrize("hookpoint", ["resid_post.2", "mlp_out.1", "mlp_neurons.1"])
def test_steering_changes_every_position_and_kl_grows_with_alpha(tiny_subject, hookpoint):
    v = _unit(tiny_subject.hookpoint_dim(hookpoint), 1)
    ids = torch.tensor([PROMPTS[0]])
    clean = _full_logits(tiny_subject, ids)
    with steering(tiny_subject, hookpoint, 1.0 * v):
        steered = _full_logits(tiny_subject, ids)
    changed = (steered - clean).abs().amax(-1)[0]
    assert (changed > 1e-6).all()  # every position, the first one included
    kls = [_kl(tiny_subject, hookpoint, a * v) for a in (0.01, 0.1, 1.0, 10.0)]
    assert all(0 < a < b for a, b in zip(kls, kls[1:])), kls


def test_neuron_steering_equals_adding_its_down_projection_column_to_mlp_out(tiny_subject):
    """mlp_neurons.L is steered at the down projection's input: the same as adding that neuron's
    column of W_down to mlp_out.L (what docs/intervention.md states)."""
    neuron, alpha = 7, 3.0
    down = down_projection(tiny_subject.layers[1].mlp).weight.detach()  # [d_model, d_mlp]
    e = torch.zeros(tiny_subject.d_mlp)
    e[neuron] = 1.0
    a = next_token_logprobs(tiny_subject, PROMPTS, "mlp_neurons.1", alpha * e)
    b = next_token_logprobs(tiny_subject, PROMPTS, "mlp_out.1", alpha * down[:, neuron])
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, next_token_logprobs(tiny_subject, PROMPTS), atol=1e-5)


# --- the KL search ----------------------------------------------------------------------------------

def test_search_on_a_known_curve_reaches_targets_in_few_steps_and_reports_the_unreachable():
    """KL = alpha^2 / (1 + alpha^2 / 5): quadratic, then saturating at 5 nats."""
    calls = []

    def kl(alpha: float) -> float:
        calls.append(alpha)
        return alpha ** 2 / (1 + alpha ** 2 / 5)

    found = search_alphas(kl, [0.1, 0.3, 1.0, 3.0, 100.0], rtol=0.1)
    searched = list(calls)
    assert len(searched) <= 5 * MAX_ITER and len(searched) == len(set(searched))  # shared, never repeated
    assert sum(r.iterations for r in found.values()) == len(searched)
    for t in (0.1, 0.3, 1.0, 3.0):
        r = found[t]
        assert r.reached and abs(r.kl - t) <= 0.1 * t and r.kl == pytest.approx(kl(r.alpha))
    alphas = [found[t].alpha for t in (0.1, 0.3, 1.0, 3.0)]
    assert alphas == sorted(alphas)
    assert not found[100.0].reached and found[100.0].kl < 5 and found[100.0].iterations <= MAX_ITER
    low = find_alpha(lambda a: 10.0 + a, 0.5)  # overshoots even at alpha = 1e-3
    assert not low.reached and low.alpha == pytest.approx(1e-3)


def test_kl_search_on_the_tiny_model_is_within_tolerance_and_monotone(tiny_subject):
    v = _unit(tiny_subject.d_model, 2)
    clean = next_token_logprobs(tiny_subject, PROMPTS)
    found = search_alphas(lambda a: mean_kl(clean, next_token_logprobs(tiny_subject, PROMPTS, SET, a * v)),
                          TINY_TARGETS + [UNREACHABLE])
    for t in TINY_TARGETS:
        r = found[t]
        assert r.reached and abs(r.kl - t) <= 0.1 * t, r
        assert r.kl == pytest.approx(_kl(tiny_subject, SET, r.alpha * v))  # the alpha reported gives that KL
    assert [found[t].alpha for t in TINY_TARGETS] == sorted(found[t].alpha for t in TINY_TARGETS)
    far = found[UNREACHABLE]
    assert not far.reached and math.isfinite(far.kl) and far.kl < 1 and far.alpha <= 1e4


# --- continuations ----------------------------------------------------------------------------------

def test_continuations_are_deterministic_and_batched_equals_one_by_one(tiny_subject):
    v = 30 * _unit(tiny_subject.d_model, 3)
    for vector in (None, v):
        batched = greedy_continuations(tiny_subject, PROMPTS, 6, SET, vector)
        assert batched == greedy_continuations(tiny_subject, PROMPTS, 6, SET, vector)
        assert batched == [greedy_continuations(tiny_subject, [p], 6, SET, vector)[0] for p in PROMPTS]
        assert all(len(c) == 6 for c in batched)
        # left padding leaves each prompt's next-token distribution as it is alone
        together = next_token_logprobs(tiny_subject, PROMPTS, SET, vector)
        alone = torch.cat([next_token_logprobs(tiny_subject, [p], SET, vector) for p in PROMPTS])
        assert torch.allclose(together, alone, atol=1e-5)
    assert greedy_continuations(tiny_subject, PROMPTS, 6) != greedy_continuations(tiny_subject, PROMPTS, 6, SET, v)


# --- directions and baselines -------------------------------------------------------------------------

def test_directions_come_from_every_coder_kind_and_the_random_baseline_has_their_norm(tiny_subject, store):
    hp, sae = latent_directions(store.info, SET, tiny_subject)
    assert hp == SET and sae.shape == (256, tiny_subject.d_model)
    hp, neurons = latent_directions(store.info, NEURONS, tiny_subject)
    assert hp == "mlp_neurons.1" and torch.equal(neurons, torch.eye(tiny_subject.d_mlp))
    info = {"name": "x", "coders": {"r": {"kind": "random", "spec": "random:16:2@resid_post.1"}}}
    _, rand = latent_directions(info, "r", tiny_subject)
    assert torch.equal(rand, RandomDirectionCoder("resid_post.1", tiny_subject.d_model, 16, 2).W)
    for directions in (sae, neurons, rand):
        u = unit(directions[3])
        r = random_direction(u.shape[0], seed=11)
        assert float(u.norm()) == pytest.approx(1.0) and float(r.norm()) == pytest.approx(float(u.norm()))
    assert torch.equal(random_direction(64, 5), random_direction(64, 5))
    assert not torch.equal(random_direction(64, 5), random_direction(64, 6))
    assert unit(torch.zeros(8)) is None


def test_random_explanation_is_another_latents_and_seeded():
    expl = {1: "rivers", 2: "years", 3: "rivers", 4: "music"}
    picks = {random_explanation(expl, 1, s) for s in range(20)}
    assert picks <= {"years", "music"} and len(picks) == 2  # never its own text
    assert random_explanation(expl, 2, 7) == random_explanation(expl, 2, 7)
    assert random_explanation({1: "only"}, 1, 0) is None


# --- bad input ----------------------------------------------------------------------------------------

def _one_line(e: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


class _EncodeOnlyCoder:
    """A coder from outside this package that encodes but has no decoder (e.g. a probe)."""

    kind, hookpoint, d_in, n_latents = "probe", "resid_post.2", 64, 4

    def encode(self, x):
        return x


def test_bad_inputs_are_one_line_errors(tiny_subject, store, tiny_run):
    for bad in ([0.3, 0.0], [-1.0], []):
        with pytest.raises(AutointerpError) as e:
            InterventionConfig(target_kls=bad).check()
        _one_line(e, "--target-kls")
    with pytest.raises(AutointerpError) as e:
        InterventionConfig(new_tokens=0).check()
    _one_line(e, "--new-tokens")
    with pytest.raises(AutointerpError) as e:
        coder_directions(_EncodeOnlyCoder(), 64)
    _one_line(e, "no decoder directions", "cannot be steered")
    with pytest.raises(AutointerpError) as e:
        check_lengths(tiny_subject, [[1] * 250], 8)  # the tiny model's context is 256
    _one_line(e, "exceeds", "context of 256", "--prompt-tokens")
    with pytest.raises(AutointerpError) as e:
        greedy_continuations(tiny_subject, [[1] * 300], 1)
    _one_line(e, "context of 256")
    with pytest.raises(AutointerpError) as e:
        sample_prompts(store, 2, 500, 0)  # the run's contexts are 65 tokens
    _one_line(e, "longer than the run's contexts", "--prompt-tokens")
    with pytest.raises(AutointerpError) as e:
        with steering(tiny_subject, "resid_post.2", torch.ones(96)):
            pass
    _one_line(e, "does not fit resid_post.2")
    # through the pipeline: refused before any model loads, nothing written
    cfg = InterpretConfig(run=str(tiny_run), hookpoint=SET, latents=[0], scorers=["intervention"], target_kls=[0.0])
    with pytest.raises(AutointerpError) as e:
        run_score(cfg)
    _one_line(e, "target KL 0.0 is not positive")
    from autointerp.runs.validity import run_validate

    with pytest.raises(AutointerpError) as e:
        run_validate(InterpretConfig(run=str(tiny_run), hookpoint=SET, latents=[0], scorers=["intervention"]))
    _one_line(e, "intervention scorer is not run here")


# --- the scorer through run_score -------------------------------------------------------------------------

def _run_copy(tiny_run: Path, dest: Path, latents: list[int], hookpoint: str = SET) -> Path:
    shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns("results"))
    append_results(dest, "explanations", [{"hookpoint": hookpoint, "latent": x, "explanation": f"words about topic {i}",
                                           "model": "human"} for i, x in enumerate(latents)])
    return dest


def _parts(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in (run / "results").rglob("part-*.parquet"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_intervention_scorer_writes_rows_that_read_back_and_a_rerun_resumes(tmp_path, tiny_run, store, tiny_llm,
                                                                           monkeypatch):
    page, _ = store.latent_table(SET, sort="frequency", limit=2)
    latents = [int(x) for x in page.latent]
    run = _run_copy(tiny_run, tmp_path / "data" / "runs" / "run", latents)
    acts = run / "acts" / SET / "acts.parquet"
    before = _digest(acts)
    cfg = InterpretConfig(run=str(run), hookpoint=SET, latents=latents, scorers=["intervention"],
                          target_kls=TINY_TARGETS + [UNREACHABLE], n_intervention_prompts=3, prompt_tokens=12,
                          new_tokens=4, chunk=1)
    rows = run_score(cfg, client=tiny_llm)
    assert [r["scorer"] for r in rows] == ["intervention"] * 2
    rs = RunStore(run)
    scores = rs.scores(SET)
    assert sorted(scores.latent) == sorted(latents) and (scores.target_kl == 0.01).all()  # nearest 1 on a log scale
    assert scores.intervention_score.notna().all() and scores.error.isna().all() and (scores.n == 3).all()
    detail = rs.interventions(SET)
    assert len(detail) == 2 * 4
    far = detail[detail.target_kl == UNREACHABLE]
    assert not far.reached.any() and far.score.isna().all() and far.random_direction_score.isna().all()
    near = detail[detail.target_kl < 1]
    assert near.reached.all() and near.random_reached.all()
    assert ((near.kl - near.target_kl).abs() <= 0.1 * near.target_kl).all()
    assert near.score.notna().all() and near.random_explanation_score.notna().all()
    for latent, g in near.groupby("latent"):
        assert list(g.sort_values("target_kl").alpha) == sorted(g.alpha)  # more KL takes more strength
        assert set(g.random_explanation) == {f"words about topic {1 - latents.index(latent)}"}
    sid = scores[scores.latent == latents[0]].score_id.iloc[0]
    ex = rs.intervention_examples(sid)
    assert len(ex) == len(TINY_TARGETS) * 2 * 3  # reached targets x (latent, random direction) x prompts
    assert ex.prompt_text.map(len).gt(0).all() and ex.steered_text.notna().all() and ex.clean_text.notna().all()
    assert np.isfinite(ex[["logp_clean", "logp_steered"]].to_numpy()).all()
    mine = ex[(ex.direction == "latent") & (ex.target_kl == 0.01)]
    headline = float(scores[scores.latent == latents[0]].intervention_score.iloc[0])
    assert headline == pytest.approx(float((mine.logp_steered - mine.logp_clean).mean()))
    # its 95 % interval: a t interval over the prompts' gains, shown with the score (issue 20 B)
    gains = (mine.logp_steered - mine.logp_clean).to_numpy()
    half = stats.t.ppf(0.975, len(gains) - 1) * gains.std(ddof=1) / np.sqrt(len(gains))
    got = scores[scores.latent == latents[0]].iloc[0]
    assert (got.intervention_score_lo, got.intervention_score_hi) == (
        pytest.approx(headline - half), pytest.approx(headline + half))
    from autointerp.analysis import interval_table

    iv = interval_table(rs, SET).set_index("latent").loc[latents[0]]
    assert iv.lo == pytest.approx(headline - half) and iv.includes_chance == (headline - half <= 0 <= headline + half)
    assert ex[ex.direction == "random"].random_logp_clean.isna().all()
    # the scorer LM's log P(explanation | text), recomputed by hand for one example
    row = mine.iloc[0]
    [losses] = tiny_llm.token_losses([PROMPT.format(text=row.steered_text)], [" words about topic 0"])
    assert row.logp_steered == pytest.approx(-sum(losses), rel=1e-4)
    assert _digest(acts) == before  # steering never touches stored activations
    # the Latent page shows the steering per target KL and the continuations
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AUTOINTERP_DATA", str(run.parent.parent))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "2_Latent.py"),
                           default_timeout=120)
    at.query_params.update({"run": "run", "set": SET, "latent": str(latents[0])})
    at.run()
    assert not at.exception
    assert "Intervention (steering)" in [h.value for h in at.subheader]
    steering = next(d.value for d in at.dataframe if "intervention score" in d.value.columns)
    assert len(steering) == 4 and steering["reached"].sum() == len(TINY_TARGETS)
    # a rerun finds everything done and writes nothing; a new scorer runs alone
    parts = _parts(run)
    assert run_score(cfg, client=tiny_llm) == []
    assert _parts(run) == parts
    cfg.scorers = ["intervention", "detection"]
    cfg.test_per_quantile, cfg.n_negative = 1, 4
    assert {r["scorer"] for r in run_score(cfg, client=tiny_llm)} == {"detection"}


def test_analysis_headline_reads_the_intervention_score(tmp_path, tiny_run):
    from autointerp.analysis import score_table

    run = _run_copy(tiny_run, tmp_path / "run", [1])
    append_results(run, "scores", [{"score_id": "a", "hookpoint": SET, "latent": 1, "scorer": "intervention",
                                    "explanation": "words about topic 0", "target_kl": 1.0,
                                    "intervention_score": 0.25, "n": 8, "n_failed": 0},
                                   {"score_id": "b", "hookpoint": SET, "latent": 1, "scorer": "detection",
                                    "explanation": "words about topic 0", "auroc": 0.6, "n": 8, "n_failed": 0}])
    explain_as_scored(run, [{"hookpoint": SET, "latent": 1, "explanation": "words about topic 0"}])
    table = score_table(RunStore(run), SET)
    assert list(table.columns) == ["hookpoint", "latent", "detection", "intervention"]
    assert table.intervention.iloc[0] == 0.25 and table.detection.iloc[0] == 0.6


# --- the command line, tiny model as subject and scorer ------------------------------------------------------

def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "autointerp.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_cli_scores_intervention_and_resumes_after_a_kill(tmp_path, tiny_run, store, tiny_model_dir):
    page, _ = store.latent_table(NEURONS, sort="frequency", limit=2)
    latents = [str(int(x)) for x in page.latent]
    run = _run_copy(tiny_run, tmp_path / "run", [int(x) for x in latents], NEURONS)
    args = ["score", "--run", str(run), "--hookpoint", NEURONS, "--latents", *latents, "--model", str(tiny_model_dir),
            "--scorers", "intervention", "--target-kls", "0.001", "0.01", "--n-intervention-prompts", "2",
            "--prompt-tokens", "8", "--new-tokens", "3", "--chunk", "1"]
    bad = _cli(*[a if a != "0.001" else "-0.5" for a in args])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error:")] == [
        "error: target KL -0.5 is not positive: KL(clean || steered) is > 0 for any steering, so pass targets "
        "above 0, e.g. --target-kls 0.1 0.3 1 3"]
    killed = _cli(*args, fault="score-between-writes:2:KILL")  # the second latent's details land, then a kill
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("intervention: intervention score") == 1  # only the killed latent was redone
    rs = RunStore(run)
    scores = rs.scores(NEURONS)
    assert sorted(scores.latent.astype(str)) == sorted(latents) and scores.intervention_score.notna().all()
    assert len(rs.interventions(NEURONS)) == 2 * 2
    assert _cli(*args).stdout == ""  # nothing left to do


# --- the real SmolLM2 ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_steered_to_kl_1_changes_its_continuations(smollm2_dir):
    """Two short real prompts, a random residual direction at layer 15: KL 1 within 10% and text
    that differs from the clean continuation."""
    from autointerp.models.subject import load_subject

    subject = load_subject("smollm2", dtype="float32")
    tok = subject.tokenizer
    seqs = [tok("The river flows through the city of")["input_ids"], tok("In 1905, the physicist")["input_ids"]]
    v = random_direction(subject.d_model, 0)
    clean = next_token_logprobs(subject, seqs)
    r = find_alpha(lambda a: mean_kl(clean, next_token_logprobs(subject, seqs, "resid_post.15", a * v)), 1.0)
    assert r.reached and abs(r.kl - 1.0) <= 0.1 and 1e-3 < r.alpha < 1e4
    steered = greedy_continuations(subject, seqs, 4, "resid_post.15", 3 * r.alpha * v)
    assert steered != greedy_continuations(subject, seqs, 4)
