"""The command line: flags generated from configs, and bad input as one-line errors (exit 2)."""

import subprocess
import sys

import pytest

from autointerp.cli import build_parser


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autointerp.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _assert_one_line_error(proc, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_flags_come_from_the_dataclass_configs():
    args = build_parser().parse_args(["cache", "--tokens", "1000", "--coders", "topk:4@mlp_neurons.1",
                                      "neurons@mlp_out.0"])
    assert args.tokens == 1000 and args.coders == ["topk:4@mlp_neurons.1", "neurons@mlp_out.0"]
    assert args.ctx_len == 64 and args.run == "demo"
    args = build_parser().parse_args(["train-sae", "--no-autocast", "--lr", "0.01"])
    assert args.autocast is False and args.lr == 0.01


def test_every_help_line_states_its_default_once():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = " ".join(p.format_help().split())  # argparse wraps long lines
        assert text.count("(default:") == sum(1 for a in p._actions if a.help and a.default is not None
                                              and a.dest != "help"), name


@pytest.mark.parametrize("coder, message", [
    ("topk:4@resid_post.9", "names layer 9"),
    ("topk:4@attn_out.1", "unknown hookpoint"),
])
def test_bad_hookpoints_via_cli(tmp_path, tiny_model_dir, coder, message):
    proc = _run("cache", "--run", str(tmp_path / "r"), "--model", str(tiny_model_dir), "--coders", coder,
                "--tokens", "128")
    _assert_one_line_error(proc, message)
    assert not (tmp_path / "r").exists()


def test_width_mismatch_and_missing_sae_via_cli(tmp_path, tiny_model_dir, smollm2_dir):
    from autointerp.config import DemoConfig
    from tests.models.test_coders import _sae_lens_sae

    _sae_lens_sae("topk", d_in=576, hook="blocks.1.hook_resid_post").save_model(tmp_path / "wide")
    proc = _run("cache", "--run", str(tmp_path / "r"), "--model", str(tiny_model_dir),
                "--coders", f"sae:{tmp_path / 'wide'}", "--tokens", "128")
    _assert_one_line_error(proc, "has width 576")
    proc = _run("cache", "--run", str(tmp_path / "r"), "--model", str(tiny_model_dir),
                "--coders", f"sae:{tmp_path / 'nothing'}", "--tokens", "128")
    _assert_one_line_error(proc, "no cfg.json")
    assert DemoConfig().k == 32


def test_hub_name_offline_and_empty_corpus_via_cli(tmp_path, tiny_model_dir):
    proc = _run("cache", "--run", str(tmp_path / "r"), "--model", "someorg/some-model",
                "--coders", "topk:4@mlp_neurons.1")
    _assert_one_line_error(proc, "offline")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = _run("cache", "--run", str(tmp_path / "r"), "--model", str(tiny_model_dir), "--corpus", str(empty),
                "--coders", "topk:4@mlp_neurons.1")
    _assert_one_line_error(proc, "contains no text")
