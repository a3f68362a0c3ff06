"""Sparse coders behind one interface.

A coder turns activations [n, d_in] at one hookpoint into a sparse code: `values` and `indices`,
both [n, k], where entries with value 0 are padding (a token may have fewer than k active latents).
`decoder_directions()` gives [n_latents, d_in] directions in the model's activation space, used for
steering and the logit lens.

Kinds:
  sae        an SAE in sae-lens format (local folder, or release/id from the sae-lens registry online)
  sparsify   an EleutherAI sparsify folder (cfg.json + sae.safetensors)
  neurons    the raw units of the hookpoint, positive part (above a threshold T with neurons:T@HP)
  topk       the k largest units per token (k matched to an SAE's L0 in the baseline)
  random     random unit directions, ReLU then top-k: a baseline with no learned structure
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from autointerp.core.errors import AutointerpError
from autointerp.core.paths import hub_offline

log = logging.getLogger(__name__)

CODER_KINDS = ("sae", "sparsify", "neurons", "topk", "random")


@dataclass
class SparseCode:
    values: torch.Tensor  # [n, k] float32, 0 = padding
    indices: torch.Tensor  # [n, k] int64 latent ids

    def to_dense(self, n_latents: int) -> torch.Tensor:
        dense = torch.zeros(self.values.shape[0], n_latents, dtype=self.values.dtype)
        return dense.scatter_add_(1, self.indices, self.values)


class SparseCoder(Protocol):
    kind: str
    hookpoint: str
    d_in: int
    n_latents: int

    def encode(self, x: torch.Tensor) -> SparseCode: ...

    def decoder_directions(self) -> torch.Tensor: ...

    def describe(self) -> dict: ...


def _sparse_from_dense(dense: torch.Tensor, k: int | None = None) -> SparseCode:
    """Keep the k largest entries (default: as many as the densest row has non-zeros)."""
    if k is None:
        k = max(int((dense != 0).sum(dim=1).max().item()) if dense.numel() else 0, 1)
    k = min(k, dense.shape[1])
    values, indices = dense.topk(k, dim=1, sorted=False)
    values = values.clamp_min(0) if k < dense.shape[1] else values
    return SparseCode(values.float(), indices)


# The largest dense [rows, latents] tile a non-top-k encode holds: 64 MB of float32. The demo's
# 4096-latent SAEs over 4096-token batches fit in one tile (bit-identical to the library's encode);
# wider SAEs are encoded in row tiles, equal to it up to float32 rounding (BLAS sums in another order).
DENSE_TILE_ELEMENTS = 2**24


def concat_codes(codes: list[SparseCode]) -> SparseCode:
    """Stack codes of consecutive row blocks, padding narrower ones with zeros (padding)."""
    if len(codes) == 1:
        return codes[0]
    k = max(c.values.shape[1] for c in codes)
    pad = [(torch.nn.functional.pad(c.values, (0, k - c.values.shape[1])),
            torch.nn.functional.pad(c.indices, (0, k - c.indices.shape[1]))) for c in codes]
    return SparseCode(torch.cat([v for v, _ in pad]), torch.cat([i for _, i in pad]))


def _check_width(x: torch.Tensor, d_in: int, what: str) -> None:
    if x.shape[-1] != d_in:
        raise AutointerpError(
            f"{what} expects activations of width {d_in} but the hookpoint gives {x.shape[-1]}: "
            f"use a coder trained on this model and hookpoint"
        )


# sae-lens architectures whose `encode` this module reproduces exactly, checked against sae-lens's
# own encode on random weights in tests/models/test_coders.py. Every other architecture in sae-lens's
# registry is refused at load: the cache, store, sampling and app assume one non-negative value per
# (token, latent) computed from that token alone, at the hookpoint the decoder writes to.
SAE_LENS_EXACT = ("standard", "gated", "jumprelu", "topk", "matching_pursuit")
# Transcoders read one hookpoint and write another (`@IN>OUT`, or the metadata's hook_name_out):
# latents are encoded at IN by sae-lens's own encode, the decoder (steering, logit lens) acts at OUT.
SAE_LENS_TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
_SAE_LENS_WHY = {
    "abstopk": "its latents are signed (top-k by magnitude) but runs rank examples by non-negative activation",
    "temporal": "it encodes each token from the tokens before it, but coders here see one token at a time",
}


def _sae_lens_refusal(architecture: str) -> str | None:
    """Why an SAE of this sae-lens architecture cannot be used here; None when it encodes exactly."""
    if architecture in SAE_LENS_EXACT or architecture in SAE_LENS_TRANSCODERS:
        return None
    if architecture in _SAE_LENS_WHY:
        return _SAE_LENS_WHY[architecture]
    from sae_lens import Transcoder, __version__
    from sae_lens.registry import SAE_CLASS_REGISTRY

    if architecture not in SAE_CLASS_REGISTRY:
        return f"sae-lens {__version__} does not know it"
    if issubclass(SAE_CLASS_REGISTRY[architecture][0], Transcoder):
        return "a transcoder reads one hookpoint and writes another, but a coder here encodes and decodes at one"
    return "its encoding has not been checked against sae-lens's own here"


def _check_sae_lens_architecture(architecture: str, source: str) -> None:
    reason = _sae_lens_refusal(architecture)
    if reason is not None:
        raise AutointerpError(f"SAE {source} has sae-lens architecture {architecture!r}, which is not supported "
                              f"({reason}): use one of {', '.join(SAE_LENS_EXACT + SAE_LENS_TRANSCODERS)}")


class SaeLensCoder:
    """An SAE loaded through sae-lens; encoding is sae-lens's own `encode` (refused at construction
    for architectures outside SAE_LENS_EXACT)."""

    kind = "sae"

    def __init__(self, sae, hookpoint: str, source: str, output_hookpoint: str | None = None):
        _check_sae_lens_architecture(sae.cfg.architecture(), source)
        self.sae = sae.eval()
        self.hookpoint = hookpoint
        self.source = source
        self.output_hookpoint = _transcoder_output(sae.cfg.architecture() in SAE_LENS_TRANSCODERS, output_hookpoint,
                                                   hookpoint, f"sae-lens transcoder {source}")
        # tokens per training context, where the SAE's metadata records it (cache warns when shorter)
        self.context_size = getattr(getattr(sae.cfg, "metadata", None), "context_size", None)
        self.d_in = int(sae.cfg.d_in)
        self.n_latents = int(sae.cfg.d_sae)
        self.k = int(getattr(sae.cfg, "k", 0)) or None
        self._dec_norm: torch.Tensor | None = None

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        _check_width(x, self.d_in, f"SAE {self.source}")
        sae = self.sae
        if sae.cfg.architecture() != "topk":  # values are >= 0 (SAE_LENS_EXACT), so the top k loses nothing
            # A few rows at a time: a dense [rows, n_latents] tile stays near DENSE_TILE_ELEMENTS
            # whatever the batch, where [4096 tokens, 131k latents] would be 2 GB in float32.
            rows = max(1, DENSE_TILE_ELEMENTS // self.n_latents)
            return concat_codes([_sparse_from_dense(sae.encode(x[i:i + rows].to(sae.dtype)), self.k)
                                 for i in range(0, x.shape[0], rows)])
        # sae-lens's TopKSAE.encode step by step, minus scattering the top k into a dense
        # [n, n_latents] tensor (the same ops on the same dtype, so the same result).
        hidden_pre = sae.hook_sae_acts_pre(sae.process_sae_in(x) @ sae.W_enc + sae.b_enc)
        if sae.cfg.rescale_acts_by_decoder_norm:
            if self._dec_norm is None:
                self._dec_norm = sae.W_dec.norm(dim=-1)
            hidden_pre = hidden_pre * self._dec_norm
        values, indices = torch.topk(hidden_pre, k=self.k, dim=-1, sorted=False)
        return SparseCode(values.relu().float(), indices)

    @torch.no_grad()
    def decoder_directions(self) -> torch.Tensor:
        return self.sae.W_dec.detach().float().cpu()

    def describe(self) -> dict:
        return {"kind": self.kind, "hookpoint": self.hookpoint, "source": self.source,
                "d_in": self.d_in, "n_latents": self.n_latents, "k": self.k,
                "architecture": self.sae.cfg.architecture(),
                **({"output_hookpoint": self.output_hookpoint} if self.output_hookpoint else {})}


def _transcoder_output(transcoder: bool, output_hookpoint: str | None, hookpoint: str, what: str) -> str | None:
    """The hookpoint a transcoder's decoder writes to (None for an SAE); one-line errors when a
    transcoder names none, or an SAE is given one."""
    if transcoder and not output_hookpoint:
        raise AutointerpError(f"{what} reads one hookpoint and writes another, and records no output hookpoint: "
                              f"give both as @IN>OUT, e.g. @mlp_in.{hookpoint.rpartition('.')[2]}>mlp_out."
                              f"{hookpoint.rpartition('.')[2]}")
    if output_hookpoint and not transcoder:
        raise AutointerpError(f"{what} is not a transcoder (it decodes where it reads): drop >{output_hookpoint}")
    return output_hookpoint or None


def check_context_metadata(source: str, prepend_bos, context_size, ctx_len: int | None = None) -> list[str]:
    """Warnings (also logged) where an SAE's training contexts differ from ours: every context
    here starts with a BOS token (never cached) followed by --ctx-len corpus tokens. An SAE trained
    without BOS, or on shorter contexts, sees activations here it never saw in training."""
    warnings = []
    if prepend_bos is False:
        warnings.append(f"SAE {source} was trained without a BOS token (prepend_bos false), but contexts here "
                        f"start with one: activations near the start may be off-distribution for it")
    if context_size and ctx_len and int(context_size) < ctx_len + 1:
        warnings.append(f"SAE {source} was trained on contexts of {context_size} tokens, shorter than the "
                        f"{ctx_len + 1} here: pass --ctx-len {int(context_size) - 1} to match")
    for w in warnings:
        log.warning(w)
    return warnings


def load_sae(source: str, hookpoint: str | None = None, device: str = "cpu", dtype: str | None = None,
             output_hookpoint: str | None = None) -> SaeLensCoder:
    """An SAE from a local sae-lens folder, or `release/id` from the sae-lens registry (online).
    dtype overrides the stored one (bfloat16 encodes ~4x faster on CPUs with AMX)."""
    from sae_lens import SAE

    from autointerp.models.subject import Hookpoint

    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        cfg_file, weights = path / "cfg.json", path / "sae_weights.safetensors"
        for f in (cfg_file, weights):
            if not f.exists():
                raise AutointerpError(f"SAE folder {path} has no {f.name}: point at a folder written by "
                                      f"`autointerp train-sae` or sae-lens's save_model")
        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise AutointerpError(f"SAE config {cfg_file} is not valid JSON: the file is corrupt; "
                                  f"re-train it or copy it again") from e
        if isinstance(cfg, dict) and "architecture" in cfg:  # refuse before loading weights
            _check_sae_lens_architecture(str(cfg["architecture"]), source)
        try:
            sae = SAE.load_from_disk(str(path), device=device, dtype=dtype)
        except Exception as e:  # safetensors/json raise many types for a damaged file
            raise AutointerpError(f"SAE in {path} could not be read ({type(e).__name__}): the file is corrupt; "
                                  f"re-train it or copy it again") from e
    else:
        release, _, sae_id = source.partition("/")
        if hub_offline():
            raise AutointerpError(f"SAE {source!r} is not a local folder and the machine is offline: "
                                  f"pass a local sae-lens folder")
        try:
            sae = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32")
        except Exception as e:
            raise AutointerpError(f"could not load SAE release {release!r} id {sae_id!r} ({type(e).__name__}): "
                                  f"check the names in sae-lens's pretrained_saes.yaml and the network") from e
        cfg = sae.cfg.to_dict()
    meta = cfg.get("metadata") or {}
    hook_name = meta.get("hook_name") or cfg.get("hook_name")
    hp = hookpoint or (str(Hookpoint.parse(hook_name)) if hook_name else None)
    check_context_metadata(source, meta.get("prepend_bos", cfg.get("prepend_bos")),
                           meta.get("context_size", cfg.get("context_size")))
    if hp is None:
        raise AutointerpError(f"SAE {source} does not record its hook name: pass --hookpoint")
    out = output_hookpoint or (str(Hookpoint.parse(meta["hook_name_out"])) if meta.get("hook_name_out") else None)
    if out is None and cfg.get("hook_name_out"):
        out = str(Hookpoint.parse(cfg["hook_name_out"]))
    return SaeLensCoder(sae, hp, source, out if sae.cfg.architecture() in SAE_LENS_TRANSCODERS else output_hookpoint)


# sparsify cfg.json fields (eai-sparsify 1.3.3 SparseCoderConfig) that leave the latents as
# SparsifyCoder computes them: multi_topk is a training loss, skip_connection adds x @ W_skip to the
# reconstruction only, normalize_decoder/expansion_factor act at initialisation.
_SPARSIFY_HARMLESS = ("d_in", "k", "num_latents", "expansion_factor", "normalize_decoder", "multi_topk",
                      "skip_connection", "transcode")  # transcode: no b_dec subtracted (SparsifyCoder.encode)
SPARSIFY_ACTIVATIONS = ("topk", "groupmax")
_SPARSIFY_DEFAULTS = {"activation": "topk", "k": 32}  # sparsify's own, for fields a cfg.json leaves out
_SPARSIFY_SUPPORTED = (f"use activation {' or '.join(SPARSIFY_ACTIVATIONS)}, optionally with multi_topk "
                       f"or skip_connection")


def _check_sparsify_cfg(cfg: dict, n_latents: int, source: str) -> None:
    """Refuse a sparsify config whose encoding this coder would not reproduce (one line each)."""
    activation, k = cfg["activation"], int(cfg["k"])
    if activation not in SPARSIFY_ACTIVATIONS:
        problem = f"activation {activation!r}"
    elif unknown := sorted(f for f, v in cfg.items() if v and f not in (*_SPARSIFY_HARMLESS, "activation")):
        problem = f"unknown cfg fields {', '.join(unknown)}"
    elif activation == "groupmax" and n_latents % k:
        problem = f"groupmax with {n_latents} latents, not divisible into k={k} groups"
    else:
        return
    raise AutointerpError(f"sparsify SAE {source} has {problem}, which is not supported: {_SPARSIFY_SUPPORTED}")


class SparsifyCoder:
    """An EleutherAI sparsify SAE folder: cfg.json + sae.safetensors (encoder.weight/bias, W_dec, b_dec).
    Encoding is sparsify's SparseCoder.encode op for op, in the stored dtype: ReLU(encoder(x - b_dec))
    (a transcoder: ReLU(encoder(x))), then the top k (activation "topk") or the max of each of k equal
    groups of latents ("groupmax")."""

    kind = "sparsify"

    def __init__(self, folder: str, hookpoint: str, output_hookpoint: str | None = None):
        from safetensors.torch import load_file

        path = Path(folder)
        try:
            cfg = json.loads((path / "cfg.json").read_text())
            w = load_file(str(path / "sae.safetensors"))
        except FileNotFoundError as e:
            raise AutointerpError(f"sparsify folder {path} lacks {Path(e.filename).name}: "
                                  f"point at a folder with cfg.json and sae.safetensors") from e
        except Exception as e:
            raise AutointerpError(f"sparsify SAE in {path} could not be read ({type(e).__name__}): "
                                  f"the file is corrupt; copy it again") from e
        self.W_enc = w["encoder.weight"]  # [n_latents, d_in]
        self.b_enc = w["encoder.bias"]
        self.W_dec = w["W_dec"]  # [n_latents, d_in]
        self.b_dec = w["b_dec"]
        self.n_latents, self.d_in = self.W_enc.shape
        cfg = {**_SPARSIFY_DEFAULTS, **cfg}
        _check_sparsify_cfg(cfg, self.n_latents, str(path))
        self.k = int(cfg["k"])
        self.activation: str = cfg["activation"]
        self.hookpoint = hookpoint
        self.source = str(path)
        self.transcode = bool(cfg.get("transcode"))
        self.output_hookpoint = _transcoder_output(self.transcode, output_hookpoint, hookpoint,
                                                   f"sparsify transcoder {path}")

    def to(self, device: str) -> "SparsifyCoder":
        self.W_enc, self.b_enc, self.W_dec, self.b_dec = (t.to(device) for t in (self.W_enc, self.b_enc, self.W_dec,
                                                                                  self.b_dec))
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        _check_width(x, self.d_in, f"sparsify SAE {self.source}")
        x = x.to(self.W_enc.dtype)
        # sparsify subtracts b_dec only for an SAE: a transcoder's b_dec lives at its output hookpoint
        pre = torch.relu(torch.nn.functional.linear(x if self.transcode else x - self.b_dec, self.W_enc, self.b_enc))
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=1, sorted=False)
        else:  # groupmax: the largest latent of each of k consecutive groups
            values, indices = pre.unflatten(-1, (self.k, -1)).max(dim=-1)
            indices = indices + torch.arange(0, self.n_latents, self.n_latents // self.k, device=x.device)
        return SparseCode(values.float(), indices)

    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec.float().cpu()

    def describe(self) -> dict:
        return {"kind": self.kind, "hookpoint": self.hookpoint, "source": self.source, "d_in": self.d_in,
                "n_latents": self.n_latents, "k": self.k, "activation": self.activation,
                **({"output_hookpoint": self.output_hookpoint} if self.output_hookpoint else {})}


class NeuronCoder:
    """The hookpoint's own units as latents, positive part. With k, only the k largest per token
    (top-k neurons)."""

    def __init__(self, hookpoint: str, d_in: int, k: int | None = None, threshold: float = 0.0):
        self.kind = "topk" if k else "neurons"
        self.hookpoint = hookpoint
        self.d_in = self.n_latents = d_in
        self.k = k
        # Raw neurons only: values at or below it are dropped. The MLP's gated units are positive
        # on about half of all tokens, so at 0 a neuron is silent in almost no 32-token window and
        # the scorers have no non-activating examples to test on.
        self.threshold = float(threshold)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        _check_width(x, self.d_in, f"{self.kind} coder at {self.hookpoint}")
        x = x.float()
        if self.k:
            values, indices = x.topk(self.k, dim=1, sorted=False)
            return SparseCode(values.clamp_min(0), indices)
        # Raw neurons: every unit's positive part (as the paper's neuron baseline); zeros are not stored.
        idx = torch.arange(self.d_in, device=x.device).expand(x.shape[0], -1)
        return SparseCode(torch.where(x > self.threshold, x, torch.zeros_like(x)).clamp_min(0), idx)

    def decoder_directions(self) -> torch.Tensor:
        return torch.eye(self.d_in)

    def describe(self) -> dict:
        return {"kind": self.kind, "hookpoint": self.hookpoint, "d_in": self.d_in,
                "n_latents": self.n_latents, "k": self.k, "threshold": self.threshold}


class RandomDirectionCoder:
    """Random unit directions as a baseline: ReLU(x·w) then the k largest, seeded."""

    kind = "random"

    def __init__(self, hookpoint: str, d_in: int, n_latents: int, k: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n_latents, d_in, generator=g)
        self.W = w / w.norm(dim=1, keepdim=True)
        self.hookpoint, self.d_in, self.n_latents, self.k, self.seed = hookpoint, d_in, n_latents, k, seed

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        _check_width(x, self.d_in, f"random coder at {self.hookpoint}")
        pre = torch.relu(x.float() @ self.W.T)
        values, indices = pre.topk(self.k, dim=1, sorted=False)
        return SparseCode(values, indices)

    def decoder_directions(self) -> torch.Tensor:
        return self.W.cpu()

    def describe(self) -> dict:
        return {"kind": self.kind, "hookpoint": self.hookpoint, "d_in": self.d_in,
                "n_latents": self.n_latents, "k": self.k, "seed": self.seed}


@dataclass
class CoderSpec:
    """What to build: `kind` plus its options. `name` is the latent set's name in a run
    (default: the hookpoint for SAEs, `<hookpoint>-<kind>` for baselines)."""

    kind: str
    hookpoint: str | None = None
    source: str | None = None  # SAE/sparsify folder or sae-lens release/id
    k: int | None = None
    threshold: float = 0.0  # neurons: keep values above it
    n_latents: int | None = None
    seed: int = 0
    name: str | None = None
    output_hookpoint: str | None = None  # transcoders (sae, sparsify): where the decoder writes
    # reads the hookpoint of a variant of the subject instead (subject.split_variant): "random-init:0"
    subject_variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> "CoderSpec":
        """`sae:PATH`, `sae:PATH@HOOKPOINT`, `sparsify:PATH@HOOKPOINT`, `neurons@HOOKPOINT`,
        `neurons:T@HOOKPOINT` (values above T), `topk:K@HOOKPOINT`, `random:N:K@HOOKPOINT`; a
        transcoder (sae, sparsify) as `...@IN>OUT` (it reads IN, its decoder writes OUT); any of
        them followed by `#random-init:SEED` reads a re-initialised copy of the subject."""
        from autointerp.config import RANDOM_INIT
        from autointerp.models.subject import variant_seed

        whole = text
        text, sep, variant = text.rpartition("#") if "#" in text else (text, "", "")
        if sep:
            variant = f"{RANDOM_INIT}:{variant_seed(variant)}"
        spec = cls._parse_body(text, whole)
        spec.subject_variant = variant or None
        return spec

    @classmethod
    def _parse_body(cls, text: str, whole: str) -> "CoderSpec":
        body, _, hookpoint = text.rpartition("@") if "@" in text else (text, "", "")
        hookpoint, _, output = hookpoint.partition(">")
        kind, _, arg = body.partition(":")
        if kind not in CODER_KINDS:
            raise AutointerpError(f"unknown coder {whole!r}: use one of {', '.join(CODER_KINDS)} "
                                  f"(e.g. sae:data/saes/resid_post.15 or topk:32@mlp_neurons.15)")
        if output and kind not in ("sae", "sparsify"):
            raise AutointerpError(f"coder {whole!r}: only sae and sparsify transcoders write to another hookpoint "
                                  f"(@IN>OUT); drop >{output}")
        spec = cls(kind=kind, hookpoint=hookpoint or None, output_hookpoint=output or None)
        try:
            if kind in ("sae", "sparsify"):
                spec.source = arg
            elif kind == "topk":
                spec.k = int(arg)
            elif kind == "neurons" and arg:
                spec.threshold = float(arg)
            elif kind == "random":
                n, _, k = arg.partition(":")
                spec.n_latents, spec.k = int(n), int(k)
        except ValueError as e:
            raise AutointerpError(f"coder {whole!r} has a malformed size: e.g. topk:32@mlp_neurons.15, "
                                  f"neurons:0.4@mlp_neurons.15 or random:4096:32@resid_post.15") from e
        if kind != "sae" and not spec.hookpoint:
            raise AutointerpError(f"coder {whole!r} needs a hookpoint: append @HOOKPOINT, e.g. @resid_post.15")
        return spec

    def default_name(self, hookpoint: str) -> str:
        if self.name:
            return self.name
        if self.output_hookpoint:
            name = f"{hookpoint}-transcoder"
        elif self.kind == "sae":
            name = hookpoint
        else:
            suffix = {"topk": f"topk{self.k}", "random": "random", "neurons": "neurons", "sparsify": "sparsify"}
            name = f"{hookpoint}-{suffix[self.kind]}"
        return f"{name}-{self.subject_variant.partition(':')[0]}" if self.subject_variant else name


def build_coder(spec: CoderSpec, subject=None, dtype: str | None = None, device: str = "cpu") -> SparseCoder:
    """Instantiate a coder on `device`; with a subject, check hookpoint and width against the
    model. dtype (SAEs only) overrides the stored weights' dtype ("auto": autointerp.core.devices)."""
    if dtype == "auto":
        from autointerp.core.devices import resolve_dtype

        # the cache resolves with the subject's width too: the probe's verdict depends on it
        dtype = resolve_dtype(dtype, device, subject.d_model if subject is not None else None)
    if spec.kind == "sae":
        coder: SparseCoder = load_sae(spec.source, spec.hookpoint, device=device, dtype=dtype,
                                      output_hookpoint=spec.output_hookpoint)
    elif spec.kind == "sparsify":
        coder = SparsifyCoder(spec.source, spec.hookpoint, spec.output_hookpoint).to(device)
    else:
        if subject is None:
            raise AutointerpError(f"a {spec.kind} coder needs the subject model to know its width")
        d = subject.hookpoint_dim(spec.hookpoint)
        if spec.kind == "random":
            coder = RandomDirectionCoder(spec.hookpoint, d, spec.n_latents, spec.k, spec.seed)
            coder.W = coder.W.to(device)
        else:
            coder = NeuronCoder(spec.hookpoint, d, spec.k if spec.kind == "topk" else None, spec.threshold)
    if subject is not None:
        hp = str(subject.hookpoint(coder.hookpoint))
        coder.hookpoint = hp
        d = subject.hookpoint_dim(hp)
        if coder.d_in != d:
            raise AutointerpError(
                f"coder {spec.source or spec.kind} has width {coder.d_in} but {subject.name} hookpoint {hp} "
                f"has width {d}: use a coder trained on this model and hookpoint"
            )
        if getattr(coder, "output_hookpoint", None):
            out = str(subject.hookpoint(coder.output_hookpoint))
            coder.output_hookpoint = out
            width = int(coder.decoder_directions().shape[1])
            if width != subject.hookpoint_dim(out):
                raise AutointerpError(f"transcoder {spec.source} writes width {width} but {subject.name} hookpoint "
                                      f"{out} has width {subject.hookpoint_dim(out)}: give the output hookpoint it "
                                      f"was trained for (@IN>OUT)")
    return coder


def coder_from_manifest(run_info: dict, latent_set: str, subject=None) -> SparseCoder:
    """Rebuild a run's coder for one latent set from its manifest (run.json "coders"): checked
    against `subject` when given, else without it (widths from the manifest). SAE folders must
    still be where they were cached from."""
    entry = run_info.get("coders", {}).get(latent_set)
    if not entry or not entry.get("spec"):
        raise AutointerpError(f"run {run_info.get('name')} records no coder for latent set {latent_set!r}: "
                              f"choose one of {', '.join(run_info.get('coders', {})) or '(none)'}")
    spec = CoderSpec.parse(entry["spec"])
    if subject is not None:
        if spec.subject_variant and not subject.name.endswith(f"#{spec.subject_variant}"):
            raise AutointerpError(f"latent set {latent_set!r} reads a re-initialised copy of the subject "
                                  f"({spec.subject_variant}), not {subject.name}: steering it on the trained model "
                                  f"means nothing; choose a latent set of the trained model")
        return build_coder(spec, subject)
    hookpoint = entry.get("hookpoint") or spec.hookpoint
    if spec.kind in ("sae", "sparsify"):
        coder = build_coder(spec)
        coder.hookpoint = hookpoint
        coder.output_hookpoint = entry.get("output_hookpoint") or coder.output_hookpoint
        return coder
    d_in = int(entry["d_in"])
    if spec.kind == "random":
        return RandomDirectionCoder(hookpoint, d_in, spec.n_latents, spec.k, int(entry.get("seed", spec.seed)))
    return NeuronCoder(hookpoint, d_in, spec.k if spec.kind == "topk" else None, spec.threshold)
