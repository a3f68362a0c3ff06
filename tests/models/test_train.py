import json

import torch

from autointerp.models.train import drop_massive_activations, evaluate


def test_trained_sae_folder_has_sae_lens_format_and_metrics(tiny_sae_dir):
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(tiny_sae_dir))
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (64, 256, 8)
    assert sae.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    m = json.loads((tiny_sae_dir / "metrics.json").read_text())
    assert m["l0"] == 8 and 0 <= m["dead_pct"] <= 100 and m["eval_tokens"] > 0


def test_training_explains_variance_an_untrained_sae_does_not(tiny_sae_dir, tiny_subject):
    from sae_lens import SAE

    trained = SAE.load_from_disk(str(tiny_sae_dir))
    untrained = SAE.from_dict({**trained.cfg.to_dict()})
    x = tiny_subject.activations(torch.randint(0, 5000, (16, 33)), ["resid_post.2"])["resid_post.2"][:, 1:]
    x = x.reshape(-1, 64)
    fvu_trained = evaluate(trained, x)["fvu"]
    assert fvu_trained < 0.5 * evaluate(untrained, x)["fvu"]


def test_massive_activations_are_dropped():
    x = torch.randn(1000, 8)
    x[17] *= 1000
    kept, n = drop_massive_activations(x, 10.0)
    assert n == 1 and len(kept) == 999 and kept.norm(dim=1).max() < 100
