"""The README's commands stay true: the two make targets exist and do what it says, CI runs the
test command, every `autointerp ...` example parses, and the app command serves the app."""

import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from autointerp.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _make_dry_run(target: str) -> str:
    out = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ")


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    assert "make app" in README and "make test" in README
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert "make test" in ci
    test_steps = _make_dry_run("test")
    assert "pip install -q torch==2.13.0" in test_steps and "pytest" in test_steps
    app_steps = _make_dry_run("app")
    assert "autointerp demo" in app_steps and "streamlit run app.py" in app_steps
    # the demo is built behind the app: launched as a job first, never waited for
    assert app_steps.index("autointerp demo --background") < app_steps.index("streamlit run app.py")
    assert "--server.address 127.0.0.1" in app_steps


def test_every_cli_example_in_the_readme_parses():
    block = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S)).replace("\\\n", " ")
    examples = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("autointerp ")]
    assert len(examples) >= 4
    parser = build_parser()
    for line in examples:
        args = shlex.split(line)[1:]
        if "<command>" in args:
            continue
        parser.parse_args(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_command_serves_the_app(tiny_run):
    """Start Streamlit exactly as `make app` does (after the demo step) on the tiny run."""
    line = next(x for x in _make_dry_run("app").splitlines() if "streamlit run" in x)
    port = _free_port()
    cmd = [c for c in shlex.split(line) if "=" not in c or c.startswith("--")]  # drop the VAR=value prefix
    cmd = [str(ROOT / c) if c.endswith("bin/streamlit") else c for c in cmd]
    cmd[cmd.index("--server.port") + 1] = str(port)
    env = {**os.environ, "AUTOINTERP_DATA": str(tiny_run.parent.parent), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, body = time.time() + 90, ""
        while time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body == "ok"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "<title>" in page.lower() or "streamlit" in page.lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
