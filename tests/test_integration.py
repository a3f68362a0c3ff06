"""Integration on the real embedded pieces: SmolLM2-135M-Instruct, the Wikipedia corpus and MiniLM,
through the command line, on a few thousand tokens."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from autointerp.models.corpus import load_texts
from autointerp.store import RunStore

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "autointerp.cli", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wiki_corpus_ships_offline():
    texts = load_texts("wiki")
    assert len(texts) == 10033 and all(t.strip() for t in texts[:100])


def test_train_cache_and_browse_real_smollm2(tmp_path, smollm2_dir):
    saes = tmp_path / "saes"
    out = _cli("train-sae", "--hookpoints", "resid_post.15", "mlp_out.15", "--out-dir", str(saes),
               "--n-latents", "512", "--k", "16", "--tokens", "6000", "--eval-tokens", "1000", "--epochs", "2",
               "--batch-size", "256").stdout
    assert "resid_post.15: FVU" in out and "mlp_out.15: FVU" in out
    metrics = json.loads((saes / "resid_post.15" / "metrics.json").read_text())
    assert metrics["fvu"] < 0.75 and metrics["l0"] == 16  # 0.55 measured; an untrained SAE is > 1
    run = tmp_path / "run"
    _cli("cache", "--run", str(run), "--tokens", "3000", "--part-contexts", "16",
         "--coders", f"sae:{saes / 'resid_post.15'}", f"sae:{saes / 'mlp_out.15'}", "topk:16@mlp_neurons.15")
    store = RunStore(run)
    assert store.hookpoints() == ["mlp_neurons.15-topk16", "mlp_out.15", "resid_post.15"]
    assert store.info["n_tokens"] == 47 * 64
    page, total = store.latent_table("resid_post.15", sort="frequency", limit=5)
    assert total == 512 and page.frequency.iloc[0] > 0
    top = store.top_examples("resid_post.15", int(page.latent.iloc[0]), n=5)
    assert len(top) == 5 and all(len(e.tokens) == 32 for e in top)
    text = "".join(top[0].tokens)
    assert sum(c.isalpha() for c in text) > 40  # real decoded English, not ids
    assert np.argmax(top[0].acts) >= 0 and top[0].max_act == pytest.approx(page.max_act.iloc[0], rel=1e-5)


def test_minilm_embeds_offline():
    from sentence_transformers import SentenceTransformer

    from autointerp.core.paths import minilm_dir

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    emb = model.encode(["The river flows into the sea.", "A lake fed by a stream.", "The 1998 tax law."],
                       normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_demo_builds_end_to_end_and_a_second_call_reuses_everything(tmp_path, monkeypatch, smollm2_dir):
    """`autointerp demo` at a tiny size: real SmolLM2, SAE training, cache; then idempotent."""
    from autointerp.config import DemoConfig
    from autointerp import jobs
    from autointerp.demo import DEMO_JOB_TITLE, demo_sae_dir, run_demo

    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    (tmp_path / "models").symlink_to(smollm2_dir.parent)  # reuse the converted model
    cfg = DemoConfig(tokens=2048, train_tokens=3000, epochs=1, n_latents=256, k=8,
                     hookpoints=["resid_post.14", "mlp_out.15"], interpret=1, interpret_model="smollm2",
                     interpret_scorers=["detection", "embedding"], overlap_hookpoints=["mlp_out.14"], studies=0,
                     validate=0, dtype="float32")
    run = run_demo(cfg)
    store = RunStore(run)
    # --dtype reaches every model the demo runs: the subject and coders of the cache, SAE training,
    # and the background job's explainer/scorer (and through it the steering subject)
    assert (store.info["dtype"], store.info["coder_dtype"]) == ("float32", "float32")
    trained = json.loads((demo_sae_dir(cfg) / "resid_post.14" / "metrics.json").read_text())
    assert (trained["subject_dtype"], trained["autocast"]) == ("float32", False)
    # the main sets, the overlap study's extra SAE, and the SAE-vs-neurons study's baselines
    assert store.hookpoints() == ["mlp_neurons.15-neurons", "mlp_neurons.15-topk8", "mlp_out.14", "mlp_out.15",
                                  "mlp_out.15-random", "resid_post.14"]
    assert store.info["coders"]["mlp_neurons.15-neurons"]["threshold"] == 0.4
    # the background job explains and scores one random latent of every set, the .15 sets first,
    # then steers the residual set's latent (intervention scoring)
    (job,) = jobs.list_jobs()
    assert job.title == DEMO_JOB_TITLE and [s[0] for s in job.steps] == ["explain", "score"] * 3 + ["score"]
    assert all(s[s.index("--dtype") + 1] == "float32" for s in job.steps)
    scorers_at = job.steps[-1].index("--scorers") + 1
    assert job.steps[-1][scorers_at:scorers_at + 1] == ["intervention"] and "fuzzing" not in job.steps[-1]
    assert "resid_post.14" in job.steps[-1]
    assert [s[s.index("--hookpoint") + 1] for s in job.steps[:6:2]] == ["mlp_neurons.15-topk8", "mlp_out.15",
                                                                       "resid_post.14"]
    try:  # planned while the job has scored nothing yet; a failure must not leave it running into later tests
        # with enough latents per set, the first residual set is validated, last (a refusal stops no other step)
        from autointerp.demo import demo_steps

        steps = demo_steps(DemoConfig(interpret=6, studies=0), store)
        assert [c for c, _ in steps] == ["explain", "score"] * 3 + ["validate", "score"]
        assert steps[-2][1] == steps[-3][1] and "resid_post.14" in steps[-2][1]
        # the validated set is explained, scored and validated on 10 latents (a verdict needs 10)
        assert steps[-2][1][steps[-2][1].index("--random") + 1] == "10"
        assert steps[0][1][steps[0][1].index("--random") + 1] == "6"  # the other sets keep --interpret
        no_steering = DemoConfig(interpret=6, intervention=False, studies=0)
        assert [c for c, _ in demo_steps(no_steering, store)][-1] == "validate"
        # with studies: the overlap's decoder match first (no LLM: a figure within seconds), the small
        # studies after everything the other pages rely on
        steps = demo_steps(DemoConfig(interpret=6, studies=6, k=8, overlap_hookpoints=["mlp_out.14"]), store)
        assert [c for c, _ in steps] == (["analyze"] + ["explain", "score"] * 3 + ["validate", "score"]
                                         + ["analyze"] * 3)
        assert steps[0][1][:1] == ["overlap"] and steps[0][1][steps[0][1].index("--basis") + 1:][:1] == ["decoder"]
        assert [a[0] for _, a in steps[-3:]] == ["sampling", "coders", "overlap"]
        assert "resid_post.14" in steps[-3][1] and steps[-3][1][steps[-3][1].index("--scorers") + 1:][:2] == [
            "detection", "embedding"]
        coders = steps[-2][1]
        assert coders[coders.index("--sets") + 1:coders.index("--sets") + 5] == [
            "mlp_out.15", "mlp_neurons.15-neurons", "mlp_neurons.15-topk8", "mlp_out.15-random"]
    except BaseException:
        job.cancel()
        raise
    deadline = time.time() + 1800  # a guard against a hung job, not a time bound: the cores may be shared
    while job.state == "running" and time.time() < deadline:
        time.sleep(1)
    assert job.state == "done", "\n".join(job.log_tail(40))
    scores = store.scores()  # the main sets; the studies' sets are left to the studies
    assert set(scores.hookpoint) == {"mlp_neurons.15-topk8", "mlp_out.15", "resid_post.14"}
    assert set(scores.scorer) == {"detection", "embedding", "intervention"}
    steered = store.interventions("resid_post.14")
    assert len(steered) == 4 and set(steered.target_kl) == {0.1, 0.3, 1.0, 3.0}
    stamps = {p: p.stat().st_mtime_ns for p in [*demo_sae_dir(cfg).rglob("*.safetensors"), *run.rglob("*.parquet")]}
    assert len(stamps) >= 2 + 2 + 3 * 2
    assert run_demo(cfg) == run
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(jobs.list_jobs()) == 1  # every set has scores: no second job
