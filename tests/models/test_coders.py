import dataclasses
import json
import typing

import pytest
import torch
from sae_lens import Transcoder
from sae_lens.registry import SAE_CLASS_REGISTRY

from autointerp.models.coders import SAE_LENS_EXACT, SAE_LENS_TRANSCODERS, CoderSpec, SaeLensCoder, build_coder, load_sae
from autointerp.core.errors import AutointerpError

# Every architecture sae-lens can load, plus top-k variants with decoder-norm rescaling (as our
# trained SAEs): each must encode exactly as sae-lens does or be refused at load.
SAE_LENS_VARIANTS = [(a, {}) for a in sorted(SAE_CLASS_REGISTRY)] + \
    [(a, {"rescale_acts_by_decoder_norm": True}) for a in ("topk", "abstopk")]
# Each sparsify cfg flag set away from its default, and each activation (checked against sparsify's
# SparseCoderConfig in test_sparsify_variants_cover_its_config).
SPARSIFY_VARIANTS = {"topk": {}, "groupmax": {"activation": "groupmax"}, "multi_topk": {"multi_topk": True},
                     "skip_connection": {"skip_connection": True}, "transcode": {"transcode": True},
                     "normalize_decoder=false": {"normalize_decoder": False}}


def _report(library: str, variant: str, dtype: str, result: str) -> None:
    """One row of docs/reliability.md's coder exactness table (shown with pytest -s)."""
    print(f"\nEXACTNESS | {library} | {variant} | {dtype} | {result}")


def _randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Random weights (biases and thresholds too), so that every parameter matters to the encoding."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


def _sae_lens_cfg(architecture: str, d_in: int, d_sae: int, hook: str) -> dict:
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "metadata": {"hook_name": hook}}
    if architecture in ("topk", "abstopk"):
        cfg["k"] = 8
    if architecture == "temporal":  # its defaults need d_in divisible by n_heads * bottleneck_factor
        cfg.update(n_heads=2, bottleneck_factor=8, kval_topk=8)
    if issubclass(SAE_CLASS_REGISTRY[architecture][0], Transcoder):
        # a transcoder reads the MLP's input and writes the MLP's output
        layer = hook.split(".")[1]
        cfg.update(apply_b_dec_to_input=False, d_out=d_in)
        cfg["metadata"] = {"hook_name": f"blocks.{layer}.ln2.hook_normalized",
                           "hook_name_out": f"blocks.{layer}.hook_mlp_out"}
    return cfg


def _sae_lens_sae(architecture: str, d_in: int = 64, d_sae: int = 128, hook: str = "blocks.2.hook_resid_post",
                  **extra):
    from sae_lens import SAE

    sae = SAE.from_dict({**_sae_lens_cfg(architecture, d_in, d_sae, hook), **extra})
    _randomize(sae)
    return sae


def _acts(subject, n_docs: int = 3, seq: int = 12, hookpoint: str = "resid_post.2") -> torch.Tensor:
    ids = torch.randint(0, 1000, (n_docs, seq))
    return subject.activations(ids, [hookpoint])[hookpoint].reshape(-1, 64)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def test_sae_lens_exact_list_names_registered_architectures():
    assert set(SAE_LENS_EXACT) <= set(SAE_CLASS_REGISTRY)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("architecture,extra", SAE_LENS_VARIANTS,
                         ids=[a + ("+rescale" if e else "") for a, e in SAE_LENS_VARIANTS])
def test_every_sae_lens_architecture_encodes_exactly_or_is_refused(tmp_path, tiny_subject, architecture, extra,
                                                                   dtype):
    from sae_lens import SAE

    variant = architecture + ("+rescale" if extra else "")
    sae = _sae_lens_sae(architecture, **extra)
    sae.save_model(tmp_path / "sae")
    spec = CoderSpec.parse(f"sae:{tmp_path / 'sae'}")
    if architecture not in SAE_LENS_EXACT + SAE_LENS_TRANSCODERS:
        with pytest.raises(AutointerpError, match=f"architecture '{architecture}'.*use one of standard") as e:
            build_coder(spec, tiny_subject, dtype=dtype)
        assert "\n" not in str(e.value)
        with pytest.raises(AutointerpError, match=f"'{architecture}'"):  # loaded by other means (release/id)
            SaeLensCoder(sae, "resid_post.2", "in-memory")
        _report("sae-lens", variant, dtype, f"refused: {e.value}")
        return
    coder = build_coder(spec, tiny_subject, dtype=dtype)
    reference = SAE.load_from_disk(str(tmp_path / "sae"), dtype=dtype)  # sae-lens's own, loaded separately
    transcoder = architecture in SAE_LENS_TRANSCODERS
    # a transcoder's latents are read at its input hookpoint; its decoder writes at the output one
    assert coder.hookpoint == ("mlp_in.2" if transcoder else "resid_post.2")
    assert coder.output_hookpoint == ("mlp_out.2" if transcoder else None)
    x = _acts(tiny_subject, hookpoint=coder.hookpoint) * 4  # larger inputs: more latents fire (signed if they can)
    code = coder.encode(x)
    with torch.no_grad():
        expected = reference.encode(x.to(reference.dtype)).float()
    assert int((expected != 0).sum()) > 0
    _report("sae-lens", variant, dtype, f"{_max_abs_diff(code.to_dense(128), expected):g}")
    torch.testing.assert_close(code.to_dense(128), expected, rtol=0, atol=0)
    if architecture == "topk":
        assert code.values.shape == (36, 8)
    torch.testing.assert_close(coder.decoder_directions(), reference.W_dec.float())
    if transcoder:  # the manifest keeps where it writes
        assert coder.describe()["output_hookpoint"] == "mlp_out.2"


def test_transcoders_name_their_output_or_are_refused_in_one_line(tmp_path, tiny_subject):
    sae = _sae_lens_sae("transcoder")
    sae.cfg.metadata.hook_name_out = None  # a transcoder that does not record where it writes
    sae.save_model(tmp_path / "tc")
    with pytest.raises(AutointerpError, match=r"records no output hookpoint: give both as @IN>OUT") as e:
        build_coder(CoderSpec.parse(f"sae:{tmp_path / 'tc'}"), tiny_subject)
    assert "\n" not in str(e.value)
    coder = build_coder(CoderSpec.parse(f"sae:{tmp_path / 'tc'}@mlp_in.2>mlp_out.2"), tiny_subject)
    assert (coder.hookpoint, coder.output_hookpoint) == ("mlp_in.2", "mlp_out.2")
    assert CoderSpec.parse(f"sae:{tmp_path / 'tc'}@mlp_in.2>mlp_out.2").default_name("mlp_in.2") == \
        "mlp_in.2-transcoder"
    with pytest.raises(AutointerpError, match="writes width 64 but .* hookpoint mlp_neurons.2 has width 96"):  # the output is checked too
        build_coder(CoderSpec.parse(f"sae:{tmp_path / 'tc'}@mlp_in.2>mlp_neurons.2"), tiny_subject)
    with pytest.raises(AutointerpError, match="is not a transcoder .*drop >mlp_out.2"):
        SaeLensCoder(_sae_lens_sae("standard"), "resid_post.2", "in-memory", "mlp_out.2")
    with pytest.raises(AutointerpError, match="only sae and sparsify transcoders"):
        CoderSpec.parse("topk:8@mlp_neurons.2>mlp_out.2")


def test_trained_demo_style_sae_loads_with_sae_lens_and_matches(tiny_sae_dir, tiny_subject):
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(tiny_sae_dir))
    coder = load_sae(str(tiny_sae_dir))
    assert coder.hookpoint == "resid_post.2" and coder.k == 8
    x = tiny_subject.activations(torch.randint(0, 1000, (2, 16)), ["resid_post.2"])["resid_post.2"].reshape(-1, 64)
    torch.testing.assert_close(coder.encode(x).to_dense(256), sae.encode(x))


def test_sparsify_variants_cover_its_config():
    from sparsify import SparseCoderConfig

    fields = {f.name: f for f in dataclasses.fields(SparseCoderConfig)}
    flags = {name for name, f in fields.items() if f.type in (bool, "bool")}
    activations = set(typing.get_args(typing.get_type_hints(SparseCoderConfig)["activation"]))
    assert flags <= {next(iter(v)) for v in SPARSIFY_VARIANTS.values() if v and "activation" not in v}
    assert activations == {v.get("activation", "topk") for v in SPARSIFY_VARIANTS.values()}


def _sparsify_dir(tmp_path, dtype: torch.dtype = torch.float32, num_latents: int = 128, k: int = 8, **cfg):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(64, SparseCoderConfig(num_latents=num_latents, k=k, **cfg), dtype=dtype)
    _randomize(sae)
    sae.save_to_disk(tmp_path / "sparsify")
    return tmp_path / "sparsify"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", list(SPARSIFY_VARIANTS))
def test_every_sparsify_config_encodes_exactly_or_is_refused(tmp_path, tiny_subject, variant, dtype):
    from sparsify import SparseCoder

    folder = _sparsify_dir(tmp_path, getattr(torch, dtype), **SPARSIFY_VARIANTS[variant])
    spec = CoderSpec.parse(f"sparsify:{folder}@resid_post.2")
    if variant == "transcode":  # a transcoder must say where it writes; then it reads the MLP's input
        with pytest.raises(AutointerpError, match="records no output hookpoint: give both as @IN>OUT") as e:
            build_coder(spec, tiny_subject)
        assert "\n" not in str(e.value)
        spec = CoderSpec.parse(f"sparsify:{folder}@mlp_in.2>mlp_out.2")
    coder = build_coder(spec, tiny_subject)
    reference = SparseCoder.load_from_disk(folder)  # sparsify's own
    x = _acts(tiny_subject, hookpoint=coder.hookpoint) * 4
    code = coder.encode(x)
    with torch.no_grad():
        out = reference.encode(x.to(reference.dtype))
    expected = torch.zeros(x.shape[0], 128).scatter(1, out.top_indices, out.top_acts.float())
    assert int((expected != 0).sum()) > 0
    _report("eai-sparsify", variant, dtype, f"{_max_abs_diff(code.to_dense(128), expected):g}")
    torch.testing.assert_close(code.to_dense(128), expected, rtol=0, atol=0)
    torch.testing.assert_close(coder.decoder_directions(), reference.W_dec.float())


def test_sparsify_folders_we_cannot_encode_are_refused(tmp_path, tiny_subject):
    folder = _sparsify_dir(tmp_path / "a", num_latents=100, activation="groupmax")
    with pytest.raises(AutointerpError, match="groupmax with 100 latents, not divisible into k=8"):
        build_coder(CoderSpec.parse(f"sparsify:{folder}@resid_post.2"), tiny_subject)
    folder = _sparsify_dir(tmp_path / "b")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "signed": True, "activation": "abstopk"}))
    with pytest.raises(AutointerpError, match="activation 'abstopk'"):
        build_coder(CoderSpec.parse(f"sparsify:{folder}@resid_post.2"), tiny_subject)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "signed": True}))
    with pytest.raises(AutointerpError, match="unknown cfg fields signed"):
        build_coder(CoderSpec.parse(f"sparsify:{folder}@resid_post.2"), tiny_subject)


def test_neuron_topk_and_random_coders(tiny_subject):
    x = torch.randn(7, tiny_subject.d_mlp)
    neurons = build_coder(CoderSpec.parse("neurons@mlp_neurons.1"), tiny_subject)
    torch.testing.assert_close(neurons.encode(x).to_dense(neurons.n_latents), x.clamp_min(0))  # positive part
    topk = build_coder(CoderSpec.parse("topk:4@mlp_neurons.1"), tiny_subject)
    code = topk.encode(x)
    assert code.values.shape == (7, 4)
    torch.testing.assert_close(code.values.sort(dim=1).values, x.topk(4).values.clamp_min(0).sort(dim=1).values)
    assert topk.decoder_directions().shape == (tiny_subject.d_mlp, tiny_subject.d_mlp)
    rnd = build_coder(CoderSpec.parse("random:50:3@resid_post.1"), tiny_subject)
    rnd2 = build_coder(CoderSpec.parse("random:50:3@resid_post.1"), tiny_subject)
    torch.testing.assert_close(rnd.decoder_directions(), rnd2.decoder_directions())  # seeded
    torch.testing.assert_close(rnd.decoder_directions().norm(dim=1), torch.ones(50))
    h = torch.randn(4, 64)
    code = rnd.encode(h)
    dense = torch.relu(h @ rnd.decoder_directions().T)
    torch.testing.assert_close(code.values.sort(dim=1).values, dense.topk(3).values.sort(dim=1).values)


def test_coder_width_mismatch_is_a_one_line_error(tmp_path, tiny_subject):
    _sae_lens_sae("topk", d_in=32).save_model(tmp_path / "narrow")
    with pytest.raises(AutointerpError, match="width 32 .* width 64") as e:
        build_coder(CoderSpec.parse(f"sae:{tmp_path / 'narrow'}"), tiny_subject)
    assert "\n" not in str(e.value)


def test_missing_or_corrupt_sae_files_are_clear_errors(tmp_path, tiny_subject):
    sae_dir = tmp_path / "sae"
    _sae_lens_sae("topk").save_model(sae_dir)
    (sae_dir / "sae_weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AutointerpError, match="corrupt"):
        load_sae(str(sae_dir))
    (sae_dir / "sae_weights.safetensors").unlink()
    with pytest.raises(AutointerpError, match="no sae_weights.safetensors"):
        load_sae(str(sae_dir))
    with pytest.raises(AutointerpError, match="no cfg.json"):
        load_sae(str(tmp_path / "absent"))


def test_sae_architecture_unknown_to_sae_lens_is_refused_before_loading(tmp_path):
    sae_dir = tmp_path / "sae"
    _sae_lens_sae("topk").save_model(sae_dir)
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, "architecture": "batchtopk"}))  # a training-only one
    with pytest.raises(AutointerpError, match="'batchtopk'.*does not know it.*use one of standard"):
        load_sae(str(sae_dir))


def test_coder_specs_reject_bad_text():
    with pytest.raises(AutointerpError, match="unknown coder"):
        CoderSpec.parse("pca:3@resid_post.1")
    with pytest.raises(AutointerpError, match="needs a hookpoint"):
        CoderSpec.parse("topk:4")
    with pytest.raises(AutointerpError, match="malformed size"):
        CoderSpec.parse("topk:x@resid_post.1")
    with pytest.raises(AutointerpError, match="malformed size"):
        CoderSpec.parse("neurons:high@mlp_neurons.1")
    assert CoderSpec.parse("neurons:0.4@mlp_neurons.15").threshold == 0.4
    assert CoderSpec.parse("neurons@mlp_neurons.15").threshold == 0.0
    spec = CoderSpec.parse("topk:32@mlp_neurons.15")
    assert (spec.kind, spec.k, spec.hookpoint, spec.default_name("mlp_neurons.15")) == \
        ("topk", 32, "mlp_neurons.15", "mlp_neurons.15-topk32")


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_non_topk_saes_encode_a_few_rows_at_a_time_exactly(tmp_path, tiny_subject, monkeypatch, architecture):
    """Wide ReLU-style SAEs never hold a dense [batch, latents] tensor: rows are encoded in tiles of
    DENSE_TILE_ELEMENTS (forced here to 5 rows per tile). The code is the library's up to float32
    rounding: BLAS sums a 5-row matmul in another order than a 36-row one (about 1 ulp apart, as
    sae-lens's own encode is between batch sizes). Untiled (the demo's 4096-latent SAEs over the
    cache's 4096-token batches) it is bit for bit, tested above."""
    from sae_lens import SAE

    from autointerp.models import coders

    _sae_lens_sae(architecture).save_model(tmp_path / "sae")
    coder = build_coder(CoderSpec.parse(f"sae:{tmp_path / 'sae'}"), tiny_subject, dtype="float32")
    x = _acts(tiny_subject) * 4
    monkeypatch.setattr(coders, "DENSE_TILE_ELEMENTS", 5 * coder.n_latents)
    code = coder.encode(x)
    with torch.no_grad():
        expected = SAE.load_from_disk(str(tmp_path / "sae"), dtype="float32").encode(x)
    assert int((expected != 0).sum()) > 0 and code.values.shape[0] == x.shape[0]
    torch.testing.assert_close(code.to_dense(coder.n_latents), expected, rtol=1e-5, atol=1e-6)
    assert ((code.to_dense(coder.n_latents) != 0) == (expected != 0)).float().mean() > 0.999


def test_a_transcoder_is_cached_at_its_input_and_steered_at_its_output(tmp_path, tiny_subject):
    """A sparsify transcoder through the whole cache: its latent set reads mlp_in, the manifest
    records where it writes, and steering (intervention scoring) uses that hookpoint."""
    import duckdb
    import numpy as np

    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig
    from autointerp.intervention.scorer import latent_directions
    from autointerp.store import RunStore

    folder = _sparsify_dir(tmp_path, num_latents=128, k=8, transcode=True)
    run = cache_run(CacheConfig(run=str(tmp_path / "run"), model=tiny_subject.name, tokens=64 * 4, part_contexts=4,
                                batch_contexts=4, coder_dtype="float32",
                                coders=[f"sparsify:{folder}@mlp_in.2>mlp_out.2"]), subject=tiny_subject)
    store = RunStore(run)
    assert store.hookpoints() == ["mlp_in.2-transcoder"]
    entry = store.info["coders"]["mlp_in.2-transcoder"]
    assert (entry["hookpoint"], entry["output_hookpoint"]) == ("mlp_in.2", "mlp_out.2")
    hookpoint, directions = latent_directions(store.info, "mlp_in.2-transcoder", tiny_subject)
    assert hookpoint == "mlp_out.2" and tuple(directions.shape) == (128, 64)
    # the cached rows are the transcoder's own encoding of mlp_in
    tokens = duckdb.sql(f"SELECT * FROM read_parquet('{run / 'tokens.parquet'}') ORDER BY doc_id, pos").df()
    ids = torch.tensor(tokens.token_id.to_numpy().reshape(4, 65)[:1], dtype=torch.long)
    x = tiny_subject.activations(ids, ["mlp_in.2"])["mlp_in.2"][:, 1:].reshape(-1, 64)
    dense = build_coder(CoderSpec.parse(f"sparsify:{folder}@mlp_in.2>mlp_out.2"), tiny_subject).encode(x)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{run / 'acts' / 'mlp_in.2-transcoder' / 'acts.parquet'}') "
                      f"WHERE doc_id = 0").df()
    got = np.zeros((64, 128), dtype=np.float32)
    got[rows.pos - 1, rows.latent] = rows.value
    np.testing.assert_allclose(got, dense.to_dense(128).numpy(), rtol=1e-6, atol=1e-6)
