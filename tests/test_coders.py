import json

import pytest
import torch
from safetensors.torch import save_file

from autointerp.coders import CoderSpec, build_coder, load_sae
from autointerp.errors import AutointerpError


def _sae_lens_sae(architecture: str, d_in: int = 64, d_sae: int = 128, hook: str = "blocks.2.hook_resid_post"):
    from sae_lens import SAE

    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "metadata": {"hook_name": hook}}
    if architecture == "topk":
        cfg.update(k=8, rescale_acts_by_decoder_norm=True)  # as our trained SAEs
    sae = SAE.from_dict(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return sae


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu"])
def test_our_encoding_equals_sae_lens_encode(tmp_path, tiny_subject, architecture, dtype):
    from sae_lens import SAE

    _sae_lens_sae(architecture).save_model(tmp_path / "sae")
    coder = build_coder(CoderSpec.parse(f"sae:{tmp_path / 'sae'}"), tiny_subject, dtype=dtype)
    reference = SAE.load_from_disk(str(tmp_path / "sae"), dtype=dtype)  # sae-lens's own, loaded separately
    assert coder.hookpoint == "resid_post.2"
    x = tiny_subject.activations(torch.randint(0, 1000, (3, 12)), ["resid_post.2"])["resid_post.2"].reshape(-1, 64)
    code = coder.encode(x)
    expected = reference.encode(x.to(reference.dtype)).float()
    assert int((expected != 0).sum()) > 0
    torch.testing.assert_close(code.to_dense(128), expected, rtol=0, atol=0)
    if architecture == "topk":
        assert code.values.shape == (36, 8)
    torch.testing.assert_close(coder.decoder_directions(), reference.W_dec.float())


def test_trained_demo_style_sae_loads_with_sae_lens_and_matches(tiny_sae_dir, tiny_subject):
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(tiny_sae_dir))
    coder = load_sae(str(tiny_sae_dir))
    assert coder.hookpoint == "resid_post.2" and coder.k == 8
    x = tiny_subject.activations(torch.randint(0, 1000, (2, 16)), ["resid_post.2"])["resid_post.2"].reshape(-1, 64)
    torch.testing.assert_close(coder.encode(x).to_dense(256), sae.encode(x))


def test_sparsify_folder_encodes_like_sparsify(tmp_path, tiny_subject):
    torch.manual_seed(0)
    d, n, k = 64, 96, 5
    w = {"encoder.weight": torch.randn(n, d), "encoder.bias": torch.randn(n), "W_dec": torch.randn(n, d),
         "b_dec": torch.randn(d)}
    (tmp_path / "cfg.json").write_text(json.dumps({"k": k, "num_latents": n, "d_in": d}))
    save_file(w, tmp_path / "sae.safetensors")
    coder = build_coder(CoderSpec.parse(f"sparsify:{tmp_path}@resid_post.1"), tiny_subject)
    x = torch.randn(10, d)
    code = coder.encode(x)
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    top = pre.topk(k, dim=1)
    dense = torch.zeros(10, n).scatter(1, top.indices, top.values)
    torch.testing.assert_close(code.to_dense(n), dense)
    assert coder.decoder_directions().shape == (n, d)


def test_neuron_topk_and_random_coders(tiny_subject):
    x = torch.randn(7, tiny_subject.d_mlp)
    neurons = build_coder(CoderSpec.parse("neurons@mlp_neurons.1"), tiny_subject)
    torch.testing.assert_close(neurons.encode(x).to_dense(neurons.n_latents), x)
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


def test_coder_specs_reject_bad_text():
    with pytest.raises(AutointerpError, match="unknown coder"):
        CoderSpec.parse("pca:3@resid_post.1")
    with pytest.raises(AutointerpError, match="needs a hookpoint"):
        CoderSpec.parse("topk:4")
    with pytest.raises(AutointerpError, match="non-integer"):
        CoderSpec.parse("topk:x@resid_post.1")
    spec = CoderSpec.parse("topk:32@mlp_neurons.15")
    assert (spec.kind, spec.k, spec.hookpoint, spec.default_name("mlp_neurons.15")) == \
        ("topk", 32, "mlp_neurons.15", "mlp_neurons.15-topk32")
