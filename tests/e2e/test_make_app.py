"""`make app` on an empty data folder, as a new user types it: the app is served before the demo run
exists, the run becomes browsable at a first size, then grows in place to the full size, and the
running server shows each state without a restart.

The order is checked without waiting on the clock: the demo's build job is paused at named points
(AUTOINTERP_FAULT=...:STOP, autointerp/core/faults.py) and only let go (SIGCONT) once the test has seen
what must come before, and the run's milestones (autointerp/core/milestones.py) are read for the rest.
A `make app` that served only after caching would never be healthy while the job is paused there.
The Makefile's own `app` recipe runs (its install/models/browser prerequisites are taken as done:
the venv running this test is the installed one, and its models are linked into the data folder);
DEMO_FLAGS makes the demo tiny: one SAE, 16 contexts in parts of 4, a first-size budget of 0 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import expect

from autointerp import jobs
from autointerp.demo import DEMO_BUILD_TITLE
from autointerp.core.milestones import read_milestones
from autointerp.store import RunStore

from tests.e2e.conftest import ROOT, AppPage, _free_port

FLAGS = ("--tokens 1024 --part-contexts 4 --first-budget-s 0 --hookpoints resid_post.15 "
         "--overlap-hookpoints resid_post.15 --neuron-baseline '' --interpret 0 --dtype float32")
PAUSES = "cache-part-written:1:STOP,cache-published:1:STOP"  # before the first publish, right after it
WAIT_S = 300.0


def _wait(what: str, ok, proc: subprocess.Popen, log: Path, timeout: float = WAIT_S):
    """Wait for a condition (not a time): `ok()` once truthy; fails early if `make app` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = ok()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"make app exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


def _paused_build(data: Path) -> jobs.Job | None:
    """The demo's build job, once its process is paused (SIGSTOP) at a fault point."""
    for job in jobs.list_jobs(data):
        if job.title == DEMO_BUILD_TITLE:
            try:
                if psutil.Process(job.pid).status() == psutil.STATUS_STOPPED:
                    return job
            except psutil.NoSuchProcess:
                return None
    return None


def _metric(app: AppPage, label: str) -> str:
    box = app.page.locator('[data-testid="stMetric"]').filter(has_text=label)
    expect(box).to_have_count(1)
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_make_app_serves_first_and_the_demo_grows_behind_it(tmp_path, page, smollm2_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(smollm2_dir.parent)  # what `make models` prepared
    (data / "saes").symlink_to(ROOT / "data" / "saes")  # the demo SAEs ship in the repository
    port, log = _free_port(), tmp_path / "make-app.log"
    url = f"http://127.0.0.1:{port}"
    venv = Path(sys.prefix)
    env = {**os.environ, "AUTOINTERP_DATA": str(data), "HF_HUB_OFFLINE": "1", "AUTOINTERP_FAULT": PAUSES,
           "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", "PYTHONUNBUFFERED": "1"}
    cmd = ["make", "--no-print-directory", "-o", "browser", "-o", "models", "app", f"VENV={venv}", f"PORT={port}",
           f"DEMO_FLAGS={FLAGS}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    run = data / "runs" / "demo"
    try:
        # 1. the server is up while the build is paused before its first publish: nothing browsable yet
        _wait("the app's server", lambda: _healthy(url), proc, log)
        build = _wait("the build job paused before publishing", lambda: _paused_build(data), proc, log)
        server_up = time.time()
        assert not [m for m in read_milestones(run) if m["event"] == "run browsable"]
        app = AppPage(page, url).open()
        expect(page.get_by_text(DEMO_BUILD_TITLE, exact=False)).to_be_visible()
        progress = page.get_by_text("256/1,024 tokens")  # one part of 4 contexts cached
        expect(progress).to_be_visible()
        assert "tokens/s" in progress.inner_text() and "ETA" in progress.inner_text()

        # 2. let it publish: browsable at the first size (paused again right after publishing)
        os.kill(build.pid, signal.SIGCONT)
        _wait("the build job paused after publishing",
              lambda: _paused_build(data) if read_milestones(run) else None, proc, log)
        (first,) = read_milestones(run)
        assert (first["event"], first["n_tokens"], first["complete"]) == ("run browsable", 256, False)
        assert server_up < first["time"]
        app.open()
        assert _metric(app, "Tokens cached") == "256"
        expect(page.get_by_text("This run is growing: 256 of 1,024 tokens are browsable")).to_be_visible()
        store = RunStore(run)
        assert store.hookpoints() == ["resid_post.15"]
        latent = int(store.latent_table("resid_post.15", sort="count", limit=1)[0].latent[0])
        app.open(f"Latent?run=demo&set=resid_post.15&latent={latent}")
        expect(page.locator(".ai-example .ai-act").first).to_be_visible(timeout=60_000)  # highlighted examples
        count_first = int(_metric(app, "Activations").replace(",", ""))
        assert count_first == store.latent_stats("resid_post.15", latent)["count"]

        # 3. let it grow: the same server shows the full run
        os.kill(build.pid, signal.SIGCONT)
        _wait("the build job's end", lambda: build.state != "running", proc, log)
        assert build.state == "done", "\n".join(build.log_tail(40))
        assert [(m["event"], m["n_tokens"], m["complete"]) for m in read_milestones(run)] == [
            ("run browsable", 256, False), ("run grown", 1024, True)]
        app.open(f"Latent?run=demo&set=resid_post.15&latent={latent}")
        expect(page.locator(".ai-example .ai-act").first).to_be_visible(timeout=60_000)
        assert int(_metric(app, "Activations").replace(",", "")) > count_first
        app.open()
        assert _metric(app, "Tokens cached") == "1,024" and _metric(app, "Status") == "complete"
        app.open("Jobs")
        expect(page.get_by_text(DEMO_BUILD_TITLE)).to_be_visible()
        assert proc.poll() is None  # still serving
    finally:
        page.close()  # before the server goes: a page left open would report the lost connection
        for job in jobs.list_jobs(data):
            if job.alive:
                os.kill(job.pid, signal.SIGCONT)
                job.cancel()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
