"""The demo's build job as `make app` launches it: its steps (first size, first scores, growth),
no second build while one runs, none for a complete demo, and the explain/score job's plan once
the build's first scores exist (they are a start on the main set, not its share)."""

from __future__ import annotations

import shutil
import uuid

from autointerp.cli import build_parser
from autointerp.config import DemoConfig
from autointerp.demo import DEMO_BUILD_TITLE, build_steps, demo_steps, launch_demo_build
from autointerp.store import RunStore, append_results


def _flag(args: list[str], name: str) -> list[str]:
    i = args.index(name) + 1
    out = []
    while i < len(args) and not args[i].startswith("--"):
        out.append(args[i])
        i += 1
    return out


def test_build_steps_cache_a_first_size_score_two_latents_then_grow():
    cfg = DemoConfig(tokens=100_000, first_budget_s=120.0, background=True)
    steps = build_steps(cfg)
    assert [c for c, _ in steps] == ["demo", "explain", "score", "demo"]
    (_, first), (_, explain), (_, score), (_, grow) = steps
    assert _flag(first, "--stage") == ["first"] and _flag(grow, "--stage") == ["grow"]
    for args in (first, grow):  # the build's own settings travel with each stage; never --background again
        assert _flag(args, "--tokens") == ["100000"] and _flag(args, "--first-budget-s") == ["120.0"]
        assert "--background" not in args
    assert explain == score
    parsed = build_parser().parse_args(["explain", *explain])  # as the job's step will read them
    assert (parsed.run, parsed.hookpoint, parsed.random, parsed.chunk) == ("demo", "resid_post.15", 2, 1)
    assert parsed.scorers == ["detection", "fuzzing", "embedding"]  # chunk 1: the first scored latent lands alone
    assert [c for c, _ in build_steps(DemoConfig(interpret=0))] == ["demo", "demo"]
    assert [c for c, _ in build_steps(DemoConfig(first_scores=0))] == ["demo", "demo"]


def test_one_build_at_a_time_and_none_for_a_complete_demo(tmp_path, monkeypatch, tiny_run):
    from types import SimpleNamespace

    import autointerp.demo as demo

    monkeypatch.setenv("AUTOINTERP_DATA", str(tmp_path))
    launched = []
    monkeypatch.setattr(demo.jobs, "launch_steps", lambda steps, title, *a, **kw: launched.append(title) or SimpleNamespace(id="j", log_path="log.txt"))
    build = SimpleNamespace(title=DEMO_BUILD_TITLE, state="running", id="b")
    monkeypatch.setattr(demo.jobs, "list_jobs", lambda *a, **kw: [build])
    assert launch_demo_build(DemoConfig(background=True)) is None and launched == []  # one is running
    build.state = "done"
    launch_demo_build(DemoConfig(background=True))
    assert launched == [DEMO_BUILD_TITLE]  # no run yet: build it
    # complete: no build; its explain/score job only if a set lacks scores (none with interpret=0)
    shutil.copytree(tiny_run, tmp_path / "runs" / "demo", ignore=shutil.ignore_patterns("results"))
    assert launch_demo_build(DemoConfig(background=True, interpret=0, studies=0)) is None
    assert launched == [DEMO_BUILD_TITLE]
    launch_demo_build(DemoConfig(background=True, interpret=1, studies=0, validate=0, intervention=False))
    assert launched == [DEMO_BUILD_TITLE, demo.DEMO_JOB_TITLE]


def test_first_scores_leave_the_main_set_in_the_explain_score_job(tmp_path, tiny_run):
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("results"))
    store = RunStore(run)
    cfg = DemoConfig(run=str(run), interpret=3, validate=10, studies=0, neuron_baseline="", intervention=False)

    def score(latents: list[int]) -> None:
        append_results(run, "scores", [{"score_id": uuid.uuid4().hex, "hookpoint": "resid_post.2", "latent": x,
                                        "scorer": "detection", "explanation": f"e{x}", "auroc": 0.6, "n": 40}
                                       for x in latents])

    score([1, 2])  # the build's first scores
    steps = demo_steps(cfg, store)
    hookpoints = [build_parser().parse_args([c, *a]).hookpoint for c, a in steps]
    assert [c for c, _ in steps] == ["explain", "score", "explain", "score", "validate"]
    assert hookpoints[:2] == ["mlp_neurons.1-topk4"] * 2 and hookpoints[2:] == ["resid_post.2"] * 3
    assert _flag(steps[2][1], "--random") == ["10"]  # the validated set's full share
    score(list(range(3, 11)))
    assert [build_parser().parse_args([c, *a]).hookpoint for c, a in demo_steps(cfg, store)] == [
        "mlp_neurons.1-topk4"] * 2
