"""Background jobs with real subprocesses: the CLI explaining latents of the tiny run with the real
SmolLM2, a failing job, cancelling mid-way, a process killed from outside, and finding the jobs
again from a fresh process (a page reload)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from autointerp import jobs
from autointerp.cli import build_parser, config_from_args
from autointerp.config import InterpretConfig
from autointerp.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
SET = "resid_post.2"
pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path, tiny_run, smollm2_dir, monkeypatch):
    """A data folder of our own: a copy of the tiny run, and the converted SmolLM2 linked in so
    that `--model smollm2` finds it instead of converting again."""
    d = tmp_path / "data"
    shutil.copytree(tiny_run, d / "runs" / "tiny", ignore=shutil.ignore_patterns("results"))  # other tests write results into the shared run
    (d / "models").mkdir()
    (d / "models" / smollm2_dir.name).symlink_to(smollm2_dir)
    monkeypatch.setenv("AUTOINTERP_DATA", str(d))
    return d


def _explain_args(n_latents: int) -> list[str]:
    return jobs.interpret_args(InterpretConfig(run="tiny", hookpoint=SET, top_frequent=n_latents, model="smollm2",
                                               n_explain=6, chunk=1))


def _wait(job, until, timeout=900.0):  # a guard against a hung job, not a time bound: the cores are shared
    deadline = time.time() + timeout
    while time.time() < deadline:
        if until(job):
            return
        time.sleep(0.2)
    pytest.fail(f"job {job.id} timed out in state {job.state}; log:\n" + "\n".join(job.log_tail(30)))


def _group_alive(pgid: int) -> bool:
    """Any process, zombies included, left in the group."""
    alive = []
    for p in psutil.process_iter():
        try:
            alive.append(os.getpgid(p.pid) == pgid)
        except ProcessLookupError:
            pass
    return any(alive)


def test_interpret_args_round_trip_through_the_cli_parser():
    cfg = InterpretConfig(run="tiny", latents=[3, 5], scorers=["embedding"], cot=True, threshold=0.5,
                          api_key="secret")
    args = jobs.interpret_args(cfg)
    assert "--cot" in args and "--api-key" not in args and "--model" not in args  # defaults stay out
    back = config_from_args(InterpretConfig, build_parser().parse_args(["score", *args]))
    cfg.api_key = ""
    assert back == cfg
    assert jobs.interpret_args(InterpretConfig(show_activations=False)) == []


def test_explain_job_runs_to_done_with_progress_and_results(data):
    launched = time.time()
    job = jobs.launch("explain", _explain_args(2), title="explain 2 latents")
    assert job.state == "running" and job.dir == data / "jobs" / job.id
    assert json.loads((job.dir / "job.json").read_text())["pid"] == job.pid
    _wait(job, lambda j: j.state != "running")
    assert job.state == "done", job.log_tail(30)
    p = job.progress
    assert (p["done"], p["total"], p["unit"]) == (2, 2, "latent") and p["started"] <= p["updated"]
    # the job's own clock: positive, and within the time the test saw pass (no bound on the machine's speed)
    assert job.eta_s is None and job.error is None and 0 < job.elapsed_s <= time.time() - launched + 1
    log = job.log_tail(200)  # the whole log: the command line first, then its output
    assert log and log[0].startswith("$ autointerp explain") and any(f"{SET} " in line for line in log)
    assert all("\r" not in line for line in log)
    expl = RunStore(data / "runs" / "tiny").explanations(SET)
    assert len(expl) == 2 and expl.model.str.contains("smollm2").all()
    assert expl.raw.str.len().gt(0).all(), expl.error.tolist()  # SmolLM2 really answered
    _wait(job, lambda j: not j.alive and not _group_alive(j.pid), timeout=20)  # it leaves nothing behind


def test_failing_job_is_failed_with_the_one_line_error(data):
    job = jobs.launch("explain", ["--run", "tiny", "--hookpoint", "resid_post.99", "--latents", "1"],
                      title="bad hookpoint")
    _wait(job, lambda j: j.state != "running", timeout=60)
    assert job.state == "failed" and job.status["rc"] == 2
    assert job.error.startswith("error:") and "resid_post.99" in job.error
    assert job.error in job.log_tail(5) and "Traceback" not in "\n".join(job.log_tail(200))


def test_cancel_mid_way_keeps_completed_parts_and_ends_the_process_group(data):
    job = jobs.launch("explain", _explain_args(40), title="explain 40 latents")
    _wait(job, lambda j: (j.progress or {}).get("done", 0) >= 1)
    assert job.state == "running" and job.eta_s is not None and job.eta_s > 0
    job.cancel()
    assert job.state == "cancelled"
    assert job.status["rc"] == 130  # SIGTERM became KeyboardInterrupt: the CLI exited cleanly
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)
    assert not _group_alive(job.pid)
    results = data / "runs" / "tiny" / "results" / "explanations"
    assert not [f for f in results.iterdir() if f.name.startswith(".tmp")]  # no part half-written
    expl = RunStore(data / "runs" / "tiny").explanations(SET)
    assert 1 <= len(expl) < 40 and expl.raw.str.len().gt(0).all()
    assert "interrupted" in "\n".join(job.log_tail(5))
    elapsed = job.elapsed_s
    time.sleep(0.3)
    assert job.elapsed_s == elapsed  # the clock stops with the job


def test_process_killed_from_outside_is_failed_with_a_reason(data):
    job = jobs.launch("runs", [], title="killed")
    os.killpg(job.pid, signal.SIGKILL)
    _wait(job, lambda j: j.state != "running", timeout=10)
    assert job.state == "failed" and job.status is None and job.error == jobs.VANISHED


def test_jobs_are_found_again_from_a_fresh_process(data):
    done = jobs.launch("runs", [], title="list runs")
    failed = jobs.launch("explain", ["--run", "nothing-here", "--latents", "1"], title="no such run")
    for j in (done, failed):
        _wait(j, lambda j: j.state != "running", timeout=60)
    code = ("import json; from autointerp import jobs; "
            "print(json.dumps([(j.id, j.title, j.state, j.log_tail(1)) for j in jobs.list_jobs()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    listed = json.loads(out.stdout)
    assert [x[:3] for x in listed] == [[failed.id, "no such run", "failed"], [done.id, "list runs", "done"]]
    assert '"name": "tiny"' in listed[1][3][0]  # `autointerp runs` printed the copied run
    assert jobs.get_job(done.id).state == "done" and jobs.get_job("../x") is None
    assert [j.id for j in jobs.list_jobs(data)] == [failed.id, done.id]


def test_one_failed_explanation_is_skipped_and_counted_by_a_real_explain_then_score_job(data):
    """A latent too rare to explain is stored as a failed explanation (NULL); the score step must
    skip and count it, not take the NULL for an explanation (NaN is truthy) and crash."""
    store = RunStore(data / "runs" / "tiny")
    frequent, _ = store.latent_table(SET, sort="frequency", limit=2)
    rare, _ = store.latent_table(SET, sort="count", descending=False, min_frequency=1e-9, limit=1)
    assert int(rare["count"][0]) < 5  # fewer activations than min_examples: its explanation fails
    latents = [*frequent.latent.tolist(), int(rare.latent[0])]
    cfg = InterpretConfig(run="tiny", hookpoint=SET, latents=latents, model="smollm2", n_explain=6,
                          test_per_quantile=1, n_negative=6, scorers=["embedding"], chunk=1)
    args = jobs.interpret_args(cfg)
    job = jobs.launch_steps([("explain", args), ("score", args)], title="explain then score, one fails")
    _wait(job, lambda j: j.state != "running")
    assert job.state == "done", job.log_tail(40)
    log_text = "\n".join(job.log_tail(200))
    assert "Traceback" not in log_text
    assert "skipping 1 latents whose explanation failed" in log_text and "(1 could not be scored)" in log_text
    assert job.progress["failed"] == 1 and job.failures == 2  # the same latent, in the explain and the score step
    expl = RunStore(data / "runs" / "tiny").explanations(SET).set_index("latent")
    assert expl.loc[int(rare.latent[0]), "explanation"] is None
    assert expl.loc[int(rare.latent[0]), "error"].startswith(f"latent {int(rare.latent[0])} of {SET} has")
    scores = RunStore(data / "runs" / "tiny").scores(SET)
    assert sorted(scores.latent) == sorted(frequent.latent.tolist())  # the others are scored
    assert scores.auroc.notna().all() and scores.error.isna().all()
    # and the CLI alone, on the same stored failure
    out = subprocess.run([sys.executable, "-m", "autointerp.cli", "score", *args, "--force"],
                         capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "skipping 1 latents whose explanation failed" in out.stderr and "Traceback" not in out.stderr
    # the Jobs page shows the count
    at = AppTest.from_file(str(ROOT / "pages" / "4_Jobs.py"), default_timeout=120).run()
    assert not at.exception
    assert any("2 failures summed over steps" in c.value for c in at.caption), [c.value for c in at.caption]
