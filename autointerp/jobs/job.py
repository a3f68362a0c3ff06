"""Background jobs: pipeline commands run as subprocesses of the package's own CLI.

A job is a folder `<data>/jobs/<id>/` holding job.json (what was launched, the pid), log.txt
(stdout + stderr), progress.json (written by the pipeline through `report_progress`) and, once the
job ends, status.json (exit code). All state lives in these files, so a job outlives the Streamlit
script run (and the browser tab) that launched it, and any later `list_jobs()` finds it again.

The child runs `python -m autointerp.jobrunner <job dir> -- <command> <args> [-- <command> <args> ...]`
in a session of its own: the runner records the exit code even when the command fails, turns
SIGTERM into KeyboardInterrupt (the pipeline then keeps the parts it completed), and `cancel()` can
signal the whole process group, worker processes included. This module knows command names
(config.COMMAND_NAMES), never the stages.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from autointerp.config import COMMAND_NAMES
from autointerp.core.atomic import atomic_write_json
from autointerp.core.paths import data_dir as default_data_dir
from autointerp.core.progress import JOB_DIR_ENV
from autointerp.jobs.args import join_steps

log = logging.getLogger(__name__)

STATES = ("running", "done", "failed", "cancelled")
VANISHED = "the job's process ended without recording an exit status (killed from outside, out of memory, or a reboot)"

# Popen objects of the jobs this process launched: polling them reaps the exited ones, which would
# otherwise linger as zombies that still look alive to os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _jobs_root(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def _reap(pid: int) -> bool:
    """True if `pid` is a child of ours that has exited (and is now reaped)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return True
    return False


def _proc_alive(pid: int, create_time: float | None) -> bool:
    """Whether `pid` is still the process we started (not a zombie, not a reused pid)."""
    if _reap(pid):
        return False
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 1.0:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    for pid in list(_CHILDREN):
        _reap(pid)  # our own exited children would otherwise count as zombies
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return out


@dataclass
class Job:
    """A launched job; every property re-reads the job's files, so a Job is always current."""

    id: str
    dir: Path
    steps: list[list[str]]  # [[command, *args], ...], run in order, stopping at the first failure
    title: str
    created: float
    pid: int
    pid_create_time: float | None = None

    @property
    def command(self) -> str:
        return " + ".join(s[0] for s in self.steps)

    @property
    def argv(self) -> list[str]:
        """The child's full command line."""
        return [sys.executable, "-m", "autointerp.jobrunner", str(self.dir), *join_steps(self.steps)]

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    @property
    def status(self) -> dict | None:
        """{rc, finished, step} once the wrapper has exited normally."""
        return _read_json(self.dir / "status.json")

    @property
    def cancel_requested(self) -> bool:
        return (self.dir / "cancel.json").exists()

    @property
    def alive(self) -> bool:
        return _proc_alive(self.pid, self.pid_create_time)

    @property
    def state(self) -> str:
        status = self.status
        if status is not None:
            _reap(self.pid)
            if status["rc"] == 0:
                return "done"
            return "cancelled" if self.cancel_requested or status["rc"] == 130 else "failed"
        if self.alive:
            return "running"
        return "cancelled" if self.cancel_requested else "failed"

    @property
    def error(self) -> str | None:
        """Why a failed job failed: its one-line `error:` message, else the log's last line."""
        if self.state != "failed":
            return None
        if self.status is None:
            return VANISHED
        lines = self.log_tail(200)
        errors = [x for x in lines if x.startswith("error:")]
        return errors[-1] if errors else (lines[-1] if lines else f"exit code {self.status['rc']}")

    @property
    def progress(self) -> dict | None:
        """{done, total, unit, updated, started, step, n_steps} of the current step, or None."""
        return _read_json(self.dir / "progress.json")

    @property
    def failures(self) -> int:
        """Units (latents) of all steps so far that could not be done; they are recorded, not lost."""
        p = self.progress
        return int(p.get("failed_total", 0)) if p else 0

    @property
    def finished(self) -> float | None:
        status = self.status
        if status is not None:
            return status["finished"]
        if self.alive:
            return None
        return self.log_path.stat().st_mtime if self.log_path.exists() else self.created

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.time()) - self.created

    @property
    def rate(self) -> float | None:
        """Units per second of the current step so far (None until one unit is done)."""
        p = self.progress
        new = p["done"] - p.get("initial", 0) if p else 0
        if new <= 0 or p["updated"] <= p["started"]:
            return None
        return new / (p["updated"] - p["started"])

    @property
    def eta_s(self) -> float | None:
        """Seconds left in the current step, from its rate so far (None until one unit is done)."""
        p, rate = self.progress, self.rate
        if self.state != "running" or not p or rate is None or p["done"] >= p["total"]:
            return None
        return max(0.0, (p["total"] - p["done"]) / rate - (time.time() - p["updated"]))

    def log_tail(self, n_lines: int = 20) -> list[str]:
        """The last lines of the log as a terminal shows them (a tqdm bar's \\r redraws collapsed)."""
        try:
            with open(self.log_path, "rb") as f:
                start = max(0, f.seek(0, os.SEEK_END) - 64 * 1024)
                f.seek(start)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")[1 if start else 0:]  # the first line of a mid-file read is partial
        lines = [line.rstrip("\r").split("\r")[-1].rstrip() for line in lines]
        return [line for line in lines if line][-n_lines:]

    def cancel(self, grace_s: float = 10.0) -> None:
        """SIGTERM the job's process group (completed parts are kept), SIGKILL whatever is left
        after `grace_s`; returns once the group is gone. A job that already ended is left as is."""
        if not self.alive:
            return
        atomic_write_json(self.dir / "cancel.json", {"requested": time.time()}, durable=False)
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.time() + wait
            while time.time() < deadline:
                if not _group_members(self.pid):
                    if (child := _CHILDREN.pop(self.pid, None)) is not None:
                        child.wait(5)  # it is a zombie by now: reap it so the group is truly gone
                    return
                time.sleep(0.1)
        log.warning("job %s: process group %d still has members after SIGKILL", self.id, self.pid)

    def to_dict(self) -> dict:
        return {"id": self.id, "command": self.command, "steps": self.steps, "title": self.title, "created": self.created,
                "pid": self.pid, "pid_create_time": self.pid_create_time, "argv": self.argv}


def launch_steps(steps: list[tuple[str, list[str]]], title: str, data_dir: str | Path | None = None,
                 env: dict[str, str] | None = None) -> Job:
    """Start one job that runs several CLI commands in order (e.g. explain then score for every
    demo hookpoint), stopping at the first that fails. `env` adds variables (e.g. OPENAI_API_KEY,
    which should not travel on the command line)."""
    unknown = [c for c, _ in steps if c not in COMMAND_NAMES]
    if unknown or not steps:
        raise ValueError(f"unknown commands {unknown}: choose from {', '.join(COMMAND_NAMES)}")
    root = _jobs_root(data_dir)
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{steps[0][0]}-{uuid.uuid4().hex[:6]}"
    job_dir = root / "jobs" / job_id
    job_dir.mkdir(parents=True)
    step_lists = [[c, *map(str, a)] for c, a in steps]
    child_env = {**os.environ, **(env or {}), JOB_DIR_ENV: str(job_dir), "AUTOINTERP_DATA": str(root),
                 "PYTHONUNBUFFERED": "1"}
    created = time.time()
    with open(job_dir / "log.txt", "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "autointerp.jobrunner", str(job_dir), *join_steps(step_lists)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=child_env,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    try:
        ctime = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        ctime = None
    job = Job(job_id, job_dir, step_lists, title, created, proc.pid, ctime)
    atomic_write_json(job_dir / "job.json", job.to_dict(), durable=False)
    log.info("launched job %s (pid %d): %s", job_id, proc.pid, title)
    return job


def launch(command: str, args: list[str], title: str, data_dir: str | Path | None = None,
           env: dict[str, str] | None = None) -> Job:
    """Start `autointerp <command> <args>` in the background; returns at once."""
    return launch_steps([(command, args)], title, data_dir, env)


def _load(job_dir: Path) -> Job | None:
    meta = _read_json(job_dir / "job.json")
    if meta is None:  # still being launched, or not a job folder
        return None
    return Job(meta["id"], job_dir, meta["steps"], meta["title"], meta["created"], meta["pid"],
               meta.get("pid_create_time"))


def list_jobs(data_dir: str | Path | None = None) -> list[Job]:
    """Every job under `<data>/jobs`, newest first."""
    root = _jobs_root(data_dir) / "jobs"
    jobs = [j for d in root.glob("*/") if (j := _load(d)) is not None] if root.exists() else []
    return sorted(jobs, key=lambda j: j.created, reverse=True)


def get_job(job_id: str, data_dir: str | Path | None = None) -> Job | None:
    if "/" in job_id or job_id.startswith("."):
        return None
    return _load(_jobs_root(data_dir) / "jobs" / job_id)
