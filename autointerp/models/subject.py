"""The subject language model: loading, hookpoints, and a forward pass that stops early.

Hookpoints are named `<kind>.<layer>`:
  resid_post.L   residual stream after decoder layer L
  mlp_out.L      output of layer L's MLP
  mlp_neurons.L  MLP hidden activations, the input of layer L's down projection
  mlp_in.L       the MLP's input (after the pre-MLP norm where the family has one): what transcoders read
sae-lens hook names (`blocks.L.hook_resid_post`, `blocks.L.hook_mlp_out`, `blocks.L.mlp.hook_post`,
`blocks.L.ln2.hook_normalized`) are accepted too, so SAEs trained elsewhere map onto our hookpoints.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.config import RANDOM_INIT
from autointerp.core.errors import AutointerpError
from autointerp.core.paths import data_dir, hub_offline, smollm2_gguf

log = logging.getLogger(__name__)

HOOK_KINDS = ("resid_post", "mlp_out", "mlp_neurons", "mlp_in")
EMBEDDED_MODELS = {"smollm2": "smollm2-135m-instruct", "qwen1.5b": "qwen2.5-coder-1.5b-instruct"}
_SAE_LENS_HOOKS = {
    r"blocks\.(\d+)\.hook_resid_post": "resid_post",
    r"blocks\.(\d+)\.hook_mlp_out": "mlp_out",
    r"blocks\.(\d+)\.mlp\.hook_post": "mlp_neurons",
    r"blocks\.(\d+)\.ln2\.hook_normalized": "mlp_in",
}


@dataclass(frozen=True)
class Hookpoint:
    kind: str
    layer: int

    @classmethod
    def parse(cls, name: str) -> "Hookpoint":
        m = re.fullmatch(r"(resid_post|mlp_out|mlp_neurons|mlp_in)\.(\d+)", name)
        if m:
            return cls(m.group(1), int(m.group(2)))
        for pattern, kind in _SAE_LENS_HOOKS.items():
            m = re.fullmatch(pattern, name)
            if m:
                return cls(kind, int(m.group(1)))
        raise AutointerpError(
            f"unknown hookpoint {name!r}: use resid_post.L, mlp_out.L, mlp_neurons.L or mlp_in.L (L = layer index)"
        )

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"

    @property
    def sae_lens_name(self) -> str:
        return {
            "resid_post": f"blocks.{self.layer}.hook_resid_post",
            "mlp_out": f"blocks.{self.layer}.hook_mlp_out",
            "mlp_neurons": f"blocks.{self.layer}.mlp.hook_post",
            "mlp_in": f"blocks.{self.layer}.ln2.hook_normalized",
        }[self.kind]


class _StopForward(Exception):
    """Raised by a hook once the deepest needed layer ran: nothing after it is computed."""


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AutointerpError(f"unsupported model class {type(model).__name__}: no decoder layer list found")


def down_projection(mlp: torch.nn.Module) -> torch.nn.Module:
    for name in ("down_proj", "c_proj", "dense_4h_to_h", "fc2"):
        if hasattr(mlp, name):
            return getattr(mlp, name)
    raise AutointerpError(f"unsupported MLP class {type(mlp).__name__}: no down projection found")


def mlp_of(layer: torch.nn.Module) -> torch.nn.Module:
    """The layer's MLP block; OPT keeps fc1/fc2 on the layer itself (no `.mlp`)."""
    return layer.mlp if hasattr(layer, "mlp") else layer


# Families whose layer normalises the MLP's output before adding it to the residual stream: there
# TransformerLens's hook_mlp_out (and so sae-lens and GemmaScope MLP SAEs) reads after that norm.
_POST_MLP_NORMS = ("post_feedforward_layernorm",)


def _mlp_out_module(layer: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is TransformerLens's hook_mlp_out: the post-feed-forward norm
    (Gemma 2/3, OLMo 2), else the MLP block, or its down projection where the MLP is no module of
    its own (OPT)."""
    for name in _POST_MLP_NORMS:
        if hasattr(layer, name):
            return getattr(layer, name)
    return layer.mlp if hasattr(layer, "mlp") else down_projection(layer)


class Subject:
    """A causal LM with named hookpoints. Forward passes never run the lm_head."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.layers = decoder_layers(model)
        cfg = model.config
        self.n_layers = len(self.layers)
        self.d_model = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd)
        try:
            down = down_projection(mlp_of(self.layers[0]))
            # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
            self.d_mlp: int | None = int(down.weight.shape[1] if isinstance(down, torch.nn.Linear)
                                         else down.weight.shape[0])
        except AutointerpError:  # mixture-of-experts MLPs: no dense neurons; resid_post still works
            self.d_mlp = None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def hookpoint(self, name: str) -> Hookpoint:
        """Parse and check a hookpoint name against this model."""
        hp = Hookpoint.parse(name)
        if not 0 <= hp.layer < self.n_layers:
            raise AutointerpError(
                f"hookpoint {name!r} names layer {hp.layer} but {self.name} has layers 0..{self.n_layers - 1}"
            )
        if hp.kind != "resid_post" and self.d_mlp is None:
            raise AutointerpError(f"hookpoint {name!r}: {self.name}'s MLP ({type(mlp_of(self.layers[0])).__name__}) "
                                  f"has no dense down projection (mixture of experts?): use resid_post.{hp.layer}")
        return hp

    def hookpoint_dim(self, name: str) -> int:
        return self.d_mlp if self.hookpoint(name).kind == "mlp_neurons" else self.d_model

    def hook_site(self, name: str) -> tuple[torch.nn.Module, bool]:
        """(module, pre) whose output (input when pre: the down projection's, for mlp_neurons) is
        the hookpoint's activation. The cache reads there and steering writes there, so both act on
        the same tensor."""
        hp = self.hookpoint(name)
        layer = self.layers[hp.layer]
        if hp.kind == "resid_post":
            return layer, False
        if hp.kind == "mlp_out":
            return _mlp_out_module(layer), False
        if hp.kind == "mlp_in":  # the MLP block's input; OPT has no block, its first projection reads it
            return (layer.mlp if hasattr(layer, "mlp") else layer.fc1), True
        return down_projection(mlp_of(layer)), True

    @torch.no_grad()
    def activations(self, input_ids: torch.Tensor, hookpoints: list[str]) -> dict[str, torch.Tensor]:
        """Activations [batch, seq, dim] at each hookpoint, from one forward pass that stops after
        the deepest layer needed (later layers, the final norm and the lm_head never run)."""
        parsed = {name: self.hookpoint(name) for name in hookpoints}
        out: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name: str):
            def hook(module, args, output=None):
                value = args[0] if output is None else output
                value = value[0] if isinstance(value, tuple) else value
                # OPT runs its MLP on [batch * seq, dim]: back to [batch, seq, dim]
                out[name] = value.reshape(*input_ids.shape, -1) if value.dim() == 2 else value
            return hook

        for name, hp in parsed.items():
            module, pre = self.hook_site(name)
            handles.append(module.register_forward_pre_hook(keep(name)) if pre
                           else module.register_forward_hook(keep(name)))

        def stop(module, args, output):
            raise _StopForward

        deepest = max(hp.layer for hp in parsed.values())
        handles.append(self.layers[deepest].register_forward_hook(stop))
        try:
            base = getattr(self.model, self.model.base_model_prefix, self.model)
            base(input_ids=input_ids.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return out


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint once into a safetensors folder (loading GGUF takes ~17 s)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (once)", gguf.name, out_dir)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        model.config.quantization_config = None
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)  # atomic: a half-converted folder is never visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def concat_verified(parts: list[Path], out: Path, sha256: str, size: int) -> None:
    """Concatenate parts into out, checking size and sha256; out appears only if both match."""
    import hashlib

    digest = hashlib.sha256()
    tmp = out.with_name(".tmp-" + out.name)
    with open(tmp, "wb") as f:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 24):
                    digest.update(chunk)
                    f.write(chunk)
    got = tmp.stat().st_size
    if got != size or digest.hexdigest() != sha256:
        tmp.unlink()
        raise AutointerpError(f"assembled {out.name} has size {got} and sha256 {digest.hexdigest()[:12]}..., "
                              f"expected {size} and {sha256[:12]}...: reinstall its part packages")
    os.replace(tmp, out)


def embedded_model_dir(alias: str = "smollm2") -> Path:
    """The safetensors folder of an embedded model, converted from its shipped GGUF on first use
    (Qwen's GGUF is first assembled from its 22 part packages and hash-checked)."""
    from autointerp.core.paths import QWEN_GGUF_SHA256, QWEN_GGUF_SIZE, qwen_gguf_parts

    out = data_dir() / "models" / EMBEDDED_MODELS[alias]
    if not (out / "model.safetensors").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        if alias == "qwen1.5b":
            gguf = out.parent / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
            if not gguf.exists():
                log.info("assembling %s from its part packages", gguf.name)
                concat_verified(qwen_gguf_parts(), gguf, QWEN_GGUF_SHA256, QWEN_GGUF_SIZE)
            _convert_gguf(gguf, out)
            gguf.unlink()  # the 3.4 GB safetensors folder replaces it
        else:
            _convert_gguf(smollm2_gguf(), out)
    return out


def resolve_model_source(spec: str) -> tuple[Path | str, str | None]:
    """(folder or hub name, gguf file name or None) for a model spec: an embedded alias, a local
    HF folder, a .gguf file, or a hub name (online only)."""
    if spec in EMBEDDED_MODELS:
        return embedded_model_dir(spec), None
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        if not (path / "config.json").exists():
            raise AutointerpError(f"model folder {path} has no config.json: point at a Hugging Face model folder")
        return path, None
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise AutointerpError(f"model path {spec} does not exist: check the path")
    if hub_offline():
        raise AutointerpError(
            f"model {spec!r} is not a local folder or .gguf file and the machine is offline "
            f"(HF_HUB_OFFLINE=1): pass a local folder, a .gguf file, or one of {sorted(EMBEDDED_MODELS)}"
        )
    return spec, None


def model_width(source, gguf_file: str | None) -> int | None:
    """The model's width from its config.json (None for GGUF files or a config without one)."""
    if gguf_file or not isinstance(source, Path):
        return None
    try:
        cfg = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return None
    width = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or (cfg.get("text_config") or {}).get(
        "hidden_size")
    return int(width) if width else None


# A model spec may name a variant after '#': `smollm2#random-init:0` is SmolLM2's architecture and
# tokenizer with freshly initialised weights (the library's own init, seeded), the subject of the
# random-model baseline (Heap et al. 2025: SAEs trained on such a copy often score close to trained ones).


def variant_seed(variant: str) -> int:
    """The seed of a `random-init[:SEED]` variant (0 when omitted)."""
    name, _, seed = variant.partition(":")
    if name != RANDOM_INIT:
        raise AutointerpError(f"unknown model variant {variant!r}: the one variant is {RANDOM_INIT}[:SEED], "
                              f"e.g. smollm2#{RANDOM_INIT}:0")
    try:
        return int(seed or 0)
    except ValueError as e:
        raise AutointerpError(f"model variant {variant!r} has a malformed seed: e.g. {RANDOM_INIT}:0") from e


def split_variant(spec: str) -> tuple[str, int | None]:
    """(base model spec, random-init seed or None) of a model spec."""
    base, sep, variant = spec.rpartition("#")
    return (base, variant_seed(variant)) if sep else (spec, None)


def random_init_spec(spec: str, seed: int = 0) -> str:
    return f"{split_variant(spec)[0]}#{RANDOM_INIT}:{seed}"


def random_init_model(config, torch_dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A model of `config`'s architecture with the library's own initialisation under `seed`: the
    same seed gives the same weights (the cache, the logit lens and a Ray worker rebuild it alike)."""
    from transformers import AutoModelForCausalLM

    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    finally:
        torch.random.set_rng_state(rng_state)


def random_init_copy(subject: "Subject", seed: int) -> "Subject":
    """The subject's architecture and tokenizer with re-initialised weights (random_init_model)."""
    model = random_init_model(subject.model.config, subject.dtype, seed).to(subject.device)
    return Subject(model, subject.tokenizer, name=random_init_spec(subject.name, seed))


def load_causal_lm(spec: str, dtype: str = "auto", device: str = "cpu"):
    """(model, tokenizer) for a model spec (see resolve_model_source; `#random-init:SEED` for a
    re-initialised copy), in the dtype that autointerp.core.devices.resolve_dtype gives for `dtype` on
    `device` (auto: measured on this CPU)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from autointerp.core.devices import resolve_dtype

    spec, seed = split_variant(spec)
    source, gguf_file = resolve_model_source(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    torch_dtype = getattr(torch, resolve_dtype(dtype, device, model_width(source, gguf_file)))
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        if seed is not None:
            return random_init_model(AutoConfig.from_pretrained(source, **kwargs), torch_dtype, seed), tok
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as e:
        if isinstance(source, str):
            raise AutointerpError(
                f"could not fetch model {spec!r} from the hub ({type(e).__name__}): check the name and the "
                f"network, or pass a local folder"
            ) from e
        raise AutointerpError(f"could not load model from {source}: {e}".splitlines()[0]) from e
    return model, tok


def load_subject(spec: str = "smollm2", dtype: str = "auto", device: str = "cpu") -> Subject:
    """The subject model on `device`; dtype as for load_causal_lm (auto: measured on this machine)."""
    model, tok = load_causal_lm(spec, dtype, device)
    return Subject(model.to(device), tok, name=spec)
