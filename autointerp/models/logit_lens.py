"""Logit lens of a latent's decoder direction: the output tokens it promotes and suppresses most
when written into the residual stream (final norm's gain, then the unembedding), as on
Neuronpedia's feature page. Neuron latents are mapped to the residual stream through the MLP's
down projection first; random-direction baselines have no decoder and no logit lens."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from autointerp.models.coders import CoderSpec, build_coder
from autointerp.core.errors import AutointerpError
from autointerp.models.subject import Hookpoint, decoder_layers, down_projection, mlp_of, load_causal_lm


@dataclass
class LogitLens:
    top: list[tuple[str, float]]
    bottom: list[tuple[str, float]]


@functools.lru_cache(maxsize=2)
def _model(spec: str):
    model, tok = load_causal_lm(spec, "float32")
    return model.eval(), tok


@functools.lru_cache(maxsize=8)
def _decoder(spec: str) -> torch.Tensor:
    return build_coder(CoderSpec.parse(spec)).decoder_directions()


def _final_norm_gain(model) -> torch.Tensor | None:
    """The final norm's per-dimension gain. Gemma's RMSNorm multiplies by (1 + weight), every
    other family's by weight."""
    base = getattr(model, model.base_model_prefix)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
        module = getattr(base, name, None)
        if module is not None and getattr(module, "weight", None) is not None:
            weight = module.weight.detach().float()
            return 1.0 + weight if type(module).__name__.startswith("Gemma") else weight
    return None


def _coder_entry(run_info: dict, latent_set: str) -> dict:
    coder = run_info.get("coders", {}).get(latent_set)
    if coder is None:
        raise AutointerpError(f"latent set {latent_set!r} is not in run {run_info.get('name')}")
    return coder


def subject_spec(run_info: dict, latent_set: str) -> str:
    """The model a latent set reads: the run's subject, or its re-initialised copy for a
    random-model baseline set (whose unembedding is then the copy's)."""
    variant = _coder_entry(run_info, latent_set).get("subject_variant")
    return f"{run_info['model']}#{variant}" if variant else run_info["model"]


@torch.no_grad()
def residual_direction(run_info: dict, latent_set: str, latent: int) -> torch.Tensor:
    """The latent's direction in the residual stream (d_model)."""
    coder = _coder_entry(run_info, latent_set)
    if coder["kind"] in ("sae", "sparsify"):
        return _decoder(coder["spec"])[int(latent)].float()
    if coder["kind"] in ("neurons", "topk"):
        model, _ = _model(subject_spec(run_info, latent_set))
        down = down_projection(mlp_of(decoder_layers(model)[Hookpoint.parse(coder["hookpoint"]).layer]))
        w = down.weight.detach().float()
        return w[:, int(latent)] if isinstance(down, torch.nn.Linear) else w[int(latent)]
    raise AutointerpError(f"{coder['kind']} latents have no decoder direction, so no logit lens")


@torch.no_grad()
def logit_lens(run_info: dict, latent_set: str, latent: int, k: int = 10) -> LogitLens:
    model, tok = _model(subject_spec(run_info, latent_set))
    direction = residual_direction(run_info, latent_set, latent)
    gain = _final_norm_gain(model)
    if gain is not None:
        direction = direction * gain
    logits = model.get_output_embeddings().weight.detach().float() @ direction
    top, bottom = logits.topk(k), (-logits).topk(k)
    name = tok.convert_ids_to_tokens
    return LogitLens([(tok.convert_tokens_to_string([name(int(i))]), float(v)) for v, i in zip(*top)],
                     [(tok.convert_tokens_to_string([name(int(i))]), float(-v)) for v, i in zip(*bottom)])
