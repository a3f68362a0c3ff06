"""The random-model baseline (issue 23.5): a re-initialised copy of the subject, an SAE trained on it
with the demo's recipe, cached as its own latent set that reads the copy, compared with its trained
twin in the coders study, and refused where the trained model would be steered."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from autointerp.analysis.coders import coder_summary, trained_twin
from autointerp.runs.cache import cache_run
from autointerp.models.coders import CoderSpec, build_coder, coder_from_manifest
from autointerp.config import CacheConfig, DemoConfig, TrainConfig
from autointerp.core.errors import AutointerpError
from autointerp.models.subject import load_subject, random_init_copy, split_variant
from autointerp.models.train import train_saes


def test_random_init_copy_of_smollm2_is_reinitialised(smollm2):
    copy = random_init_copy(smollm2, 0)
    assert copy.name == "smollm2#random-init:0"
    trained, fresh = dict(smollm2.model.named_parameters()), dict(copy.model.named_parameters())
    assert trained.keys() == fresh.keys()
    # every weight is new: none equals the trained one, norms are back at the library's init (ones)
    assert not any(torch.equal(trained[k], fresh[k]) for k in trained)
    norms = [k for k in fresh if k.endswith("norm.weight")]
    assert norms and all(torch.all(fresh[k] == 1) for k in norms)
    # seeded: the same seed rebuilds the same weights (a Ray worker, the logit lens), another does not
    again, other = dict(random_init_copy(smollm2, 0).model.named_parameters()), \
        dict(random_init_copy(smollm2, 1).model.named_parameters())
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert not torch.equal(fresh["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    # loading the spec gives the same copy as copying the loaded subject
    loaded = dict(load_subject("smollm2#random-init:0", "float32").model.named_parameters())
    assert all(torch.equal(fresh[k], loaded[k]) for k in fresh)


def test_variant_specs_parse_and_bad_ones_are_one_line_errors():
    assert split_variant("smollm2#random-init:3") == ("smollm2", 3)
    assert split_variant("smollm2#random-init") == ("smollm2", 0)
    assert split_variant("smollm2") == ("smollm2", None)
    spec = CoderSpec.parse("sae:data/saes/x/resid_post.15#random-init")
    assert (spec.source, spec.subject_variant) == ("data/saes/x/resid_post.15", "random-init:0")
    assert spec.default_name("resid_post.15") == "resid_post.15-random-init"
    assert CoderSpec.parse("random:64:4@resid_post.2#random-init:2").default_name("resid_post.2") == \
        "resid_post.2-random-random-init"
    for bad in ("smollm2#trained", "smollm2#random-init:x"):
        with pytest.raises(AutointerpError, match="variant") as e:
            split_variant(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(AutointerpError, match="variant"):
        CoderSpec.parse("sae:x#shuffled")


@pytest.fixture(scope="module")
def random_init_run(tmp_path_factory, tiny_subject, tiny_sae_dir):
    """An SAE trained on a re-initialised tiny Llama (seed 1: the tiny model itself was made with
    seed 0), cached beside the trained model's SAE in one run."""
    copy = random_init_copy(tiny_subject, 1)
    out = tmp_path_factory.mktemp("random-init-saes")
    metrics = train_saes(TrainConfig(model=copy.name, hookpoints=["resid_post.2"], out_dir=str(out), n_latents=256,
                                     k=8, tokens=6000, eval_tokens=1000, epochs=2, batch_size=256, autocast=False),
                         subject=copy)["resid_post.2"]
    run = tmp_path_factory.mktemp("data") / "runs" / "rib"
    cache_run(CacheConfig(run=str(run), model=tiny_subject.name,
                          coders=[f"sae:{tiny_sae_dir}", f"sae:{out / 'resid_post.2'}#random-init:1"],
                          tokens=64 * 24, part_contexts=8, batch_contexts=8, coder_dtype="float32"),
              subject=tiny_subject)
    return run, out / "resid_post.2", metrics, copy


def test_the_random_init_sae_is_trained_on_the_copy(random_init_run):
    _, sae_dir, metrics, copy = random_init_run
    assert metrics["l0"] == 8 and 0 < metrics["fvu"] < 0.9 and metrics["steps"] > 0
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == copy.name and copy.name.endswith("#random-init:1")


def test_the_random_init_set_caches_the_copy_s_activations(random_init_run, tiny_subject):
    run, sae_dir, _, copy = random_init_run
    info = json.loads((run / "run.json").read_text())
    assert sorted(info["coders"]) == ["resid_post.2", "resid_post.2-random-init"]
    assert info["coders"]["resid_post.2-random-init"]["subject_variant"] == "random-init:1"
    tokens = duckdb.sql(f"SELECT * FROM read_parquet('{run / 'tokens.parquet'}') ORDER BY doc_id, pos").df()
    ids = torch.tensor(tokens.token_id.to_numpy().reshape(24, 65), dtype=torch.long)[:4]
    sae = build_coder(CoderSpec.parse(f"sae:{sae_dir}"), copy, dtype="float32")

    def dense(subject) -> np.ndarray:
        x = subject.activations(ids, ["resid_post.2"])["resid_post.2"][:, 1:].reshape(-1, 64)
        return sae.encode(x).to_dense(sae.n_latents).reshape(4, 64, -1).numpy()

    rows = duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / 'resid_post.2-random-init' / 'acts.parquet'}') "
                      f"WHERE doc_id < 4").df()
    got = np.zeros((4, 64, sae.n_latents), dtype=np.float32)
    got[rows.doc_id, rows.pos - 1, rows.latent] = rows.value
    np.testing.assert_array_equal(got, dense(copy))
    assert not np.array_equal(got, dense(tiny_subject))  # not the trained model's activations


def test_steering_a_random_init_set_on_the_trained_model_is_refused(random_init_run, tiny_subject):
    run, *_ = random_init_run
    info = json.loads((run / "run.json").read_text())
    with pytest.raises(AutointerpError, match="re-initialised copy") as e:
        coder_from_manifest(info, "resid_post.2-random-init", tiny_subject)
    assert "\n" not in str(e.value)
    coder_from_manifest(info, "resid_post.2", tiny_subject)  # the trained set still builds
    coder_from_manifest(info, "resid_post.2-random-init")  # decoder reads need no subject


def test_logit_lens_reads_the_copy_s_unembedding(random_init_run):
    from autointerp.models.logit_lens import subject_spec

    run, *_ = random_init_run
    info = json.loads((run / "run.json").read_text())
    assert subject_spec(info, "resid_post.2-random-init") == f"{info['model']}#random-init:1"
    assert subject_spec(info, "resid_post.2") == info["model"]


def test_coders_study_compares_the_random_init_set_with_its_trained_twin():
    rng = np.random.default_rng(0)
    sets = {"mlp_out.15": 0.7, "mlp_out.15-random": 0.5, "resid_post.15": 0.8, "resid_post.15-random-init": 0.6}
    scores = pd.DataFrame([{"condition": c, "latent": i, "scorer": "detection", "value": m + rng.normal(0, 0.02),
                            "created_at": pd.Timestamp("2026-12-06") + pd.Timedelta(minutes=j)}
                           for j, (c, m) in enumerate(sets.items()) for i in range(6)])
    out = coder_summary(scores, "detection").set_index("condition")
    assert out.loc["resid_post.15-random-init", "vs"] == "resid_post.15"
    assert out.loc["mlp_out.15-random", "vs"] == "mlp_out.15"  # the reference, as before
    assert out.loc["resid_post.15", "vs"] == "mlp_out.15"
    own = scores[scores.condition == "resid_post.15-random-init"].value.mean() - \
        scores[scores.condition == "resid_post.15"].value.mean()
    assert out.loc["resid_post.15-random-init", "diff"] == pytest.approx(own)
    assert trained_twin("resid_post.15-random-init", {"mlp_out.15"}) is None


def test_demo_study_sets_include_the_baseline_only_when_asked(tmp_path):
    from autointerp.demo import coder_study_sets

    class Store:
        def hookpoints(self):
            return ["mlp_out.15", "mlp_neurons.15-neurons", "mlp_neurons.15-topk32", "mlp_out.15-random",
                    "resid_post.15", "resid_post.15-random-init"]

    assert coder_study_sets(DemoConfig(), Store())[-1] == "mlp_out.15-random"
    assert coder_study_sets(DemoConfig(random_init_baseline=True), Store())[-2:] == \
        ["resid_post.15", "resid_post.15-random-init"]
