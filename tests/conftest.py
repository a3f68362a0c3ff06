"""Shared fixtures: a tiny random Llama (fast unit tests) with the real SmolLM2 tokenizer, the
real SmolLM2 subject (integration), and small cached runs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once from the shipped GGUF into data/models."""
    from autointerp.models.subject import embedded_model_dir

    return embedded_model_dir("smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A 4-layer random Llama (d_model 64) saved as an HF folder, with SmolLM2's real tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_subject(tiny_model_dir):
    from autointerp.models.subject import load_subject

    return load_subject(str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    from autointerp.models.subject import load_subject

    return load_subject("smollm2", dtype="float32")  # tests compare numbers: float32 on every CPU


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory, tiny_subject) -> Path:
    """A briefly trained top-k SAE (sae-lens format) on the tiny model's resid_post.2."""
    from autointerp.config import TrainConfig
    from autointerp.models.train import train_saes

    out = tmp_path_factory.mktemp("tiny-saes")
    cfg = TrainConfig(model=str(tiny_subject.name), hookpoints=["resid_post.2"], out_dir=str(out), n_latents=256,
                      k=8, tokens=6000, eval_tokens=1000, epochs=2, batch_size=256, autocast=False)
    train_saes(cfg, subject=tiny_subject)
    return out / "resid_post.2"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_subject, tiny_sae_dir) -> Path:
    """A small complete run over the real Wikipedia corpus with the tiny model: an SAE and top-k neurons."""
    from autointerp.runs.cache import cache_run
    from autointerp.config import CacheConfig

    run = tmp_path_factory.mktemp("data") / "runs" / "tiny"  # AUTOINTERP_DATA=<that data folder> finds it
    cfg = CacheConfig(run=str(run), model=tiny_subject.name, coders=[f"sae:{tiny_sae_dir}", "topk:4@mlp_neurons.1"],
                      tokens=64 * 40, part_contexts=16, batch_contexts=8, coder_dtype="float32")
    cache_run(cfg, subject=tiny_subject)  # tests compare numbers: float32 coders on every CPU
    return run


@pytest.fixture(scope="session")
def store(tiny_run):
    """The tiny run's RunStore."""
    from autointerp.store import RunStore

    return RunStore(tiny_run)



@pytest.fixture
def fresh_copy(tmp_path, monkeypatch):
    """copy(run, name): a copy of a shared session run without its results (other tests write
    results into the shared one), under a data folder of its own that AUTOINTERP_DATA points at."""
    import shutil

    def copy(run: Path, name: str | None = None) -> Path:
        dest = tmp_path / "data" / "runs" / (name or run.name)
        shutil.copytree(run, dest, ignore=shutil.ignore_patterns("results"))
        monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path / "data"))
        return dest

    return copy

