"""Results compaction (issue 25): many small parts merged into one per kind, nothing lost or read
twice, the same row "latest" before and after, safe while a reader reads and at a kill at each named
point (AUTOINTERP_FAULT, see autointerp/core/faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from autointerp.store import RunStore, append_results, compact_results, result_part_counts, result_parts

SET = "resid_post.2"
N_PARTS = 300
ROOT = Path(__file__).resolve().parents[2]
POINTS = ("compaction-merged", "compaction-recorded", "compaction-renamed", "compaction-removing")


def _campaign(run: Path, n_parts: int = N_PARTS) -> None:
    """A long explain/score campaign in miniature: one small part per chunk, later explanations of
    the same latent replacing earlier ones, and groups of parts sharing one created_at (the
    part's name and the row in it then decide which row is the latest)."""
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": run.name, "status": "complete"}))
    for i in range(n_parts):
        at = pd.Timestamp("2026-01-01 06:00:00") + pd.Timedelta(seconds=i // 3)  # three parts per second, in the past
        latent = i % 40
        append_results(run, "explanations", [
            {"hookpoint": SET, "latent": latent, "explanation": f"take {i} of latent {latent}", "model": "m",
             "created_at": at},
            {"hookpoint": SET, "latent": latent, "explanation": f"take {i}b of latent {latent}", "model": "m",
             "created_at": at}])
        append_results(run, "scores", [
            {"score_id": f"s{i}-{scorer}", "hookpoint": SET, "latent": latent, "scorer": scorer,
             "explanation": f"take {i}b of latent {latent}", "auroc": (i % 97) / 97, "n": 10, "n_failed": 0,
             "created_at": at} for scorer in ("detection", "fuzzing")])


def _view(run: Path) -> dict[str, list]:
    """What the app reads: each latent's whole history newest first (every row once, in "latest
    wins" order), the latest explanation and score per latent, and the current ones."""
    store = RunStore(run)
    expl = store.explanations(SET)
    scores = store.scores(SET)
    current_expl = store.current_explanations(SET)
    current_scores = store.current_scores(SET)
    return {
        "explanation history": {lat: store.latent_results("explanations", SET, lat).explanation.tolist()
                                for lat in range(40)},
        "score history": {lat: store.latent_results("scores", SET, lat).score_id.tolist() for lat in range(40)},
        "explanations": sorted(zip(expl.latent, expl.explanation)),
        "scores": sorted(zip(scores.latent, scores.scorer, scores.score_id, scores.auroc)),
        "current explanations": sorted(zip(current_expl.latent, current_expl.explanation)),
        "current scores": sorted(zip(current_scores.latent, current_scores.scorer, current_scores.score_id)),
    }


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("compaction") / "run"
    _campaign(run)
    return run, _view(run)


def _copy(campaign, tmp_path: Path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(campaign[0], run)
    return run


def test_compaction_merges_the_parts_and_every_query_answers_the_same(campaign, tmp_path):
    run = _copy(campaign, tmp_path)
    before = campaign[1]
    assert sum(len(h) for h in before["explanation history"].values()) == 2 * N_PARTS
    assert sum(len(h) for h in before["score history"].values()) == 2 * N_PARTS
    assert len(before["current explanations"]) == 40
    # the latest of two rows written in one part at one time is the later row
    assert all(e.endswith(f"of latent {lat}") and "b of" in e for lat, e in before["current explanations"])
    assert result_part_counts(run)["explanations"] == N_PARTS
    assert compact_results(run, "explanations", grace_s=0) == N_PARTS
    assert compact_results(run, "scores", grace_s=0) == N_PARTS
    assert result_part_counts(run)["explanations"] == 1 and result_part_counts(run)["scores"] == 1
    assert len(list((run / "results" / "explanations").glob("*.parquet"))) == 1  # the replaced ones are gone
    assert _view(run) == before
    # a campaign that goes on: new parts land after the merged one and win as they did before
    append_results(run, "explanations", [{"hookpoint": SET, "latent": 3, "explanation": "newest", "model": "m"}])
    assert dict(_view(run)["current explanations"])[3] == "newest"
    assert compact_results(run, "explanations", grace_s=0) == 2  # the merged part and the new one
    assert dict(_view(run)["current explanations"])[3] == "newest"
    assert compact_results(run, "explanations", grace_s=0) == 0  # one part: nothing to merge


def test_a_reader_that_listed_the_parts_before_the_merge_still_reads_them(campaign, tmp_path):
    """Within the grace period the replaced parts stay on disk: a query that listed them just
    before the merge opens them; new queries read the merged part only."""
    run = _copy(campaign, tmp_path)
    listed = result_parts(run, "scores")
    assert compact_results(run, "scores", grace_s=60) == N_PARTS
    files = "[" + ", ".join(f"'{p}'" for p in listed) + "]"
    assert duckdb.sql(f"SELECT count(*) AS n FROM read_parquet({files})").fetchall() == [(2 * N_PARTS,)]
    assert [p.name for p in result_parts(run, "scores")] == [json.loads(
        (run / "results" / "scores" / "compaction.json").read_text())["merged"]]
    assert _view(run) == campaign[1]
    assert compact_results(run, "scores", grace_s=60) == 0  # still within the grace: nothing deleted
    assert len(list((run / "results" / "scores").glob("part-*.parquet"))) == N_PARTS + 1
    assert compact_results(run, "scores", grace_s=0) == 0  # past it: the replaced parts go, nothing to merge
    assert len(list((run / "results" / "scores").glob("part-*.parquet"))) == 1
    assert _view(run) == campaign[1]


def _compact_cli(run: Path, fault: str) -> subprocess.Popen:
    env = {**os.environ, "AUTOINTERP_FAULT": fault}
    return subprocess.Popen([sys.executable, "-m", "autointerp.cli", "compact", "--run", str(run), "--grace-s", "0"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", POINTS)
def test_compaction_paused_then_killed_at_each_point_loses_nothing(campaign, tmp_path, point):
    """`autointerp compact` stops itself (SIGSTOP) at the point: the app's queries read exactly what
    they read before (nothing missing, nothing twice); then it is killed there, and the next
    `compact` finishes the job."""
    run = _copy(campaign, tmp_path)
    proc = _compact_cli(run, f"{point}:1:STOP")
    try:
        os.waitpid(proc.pid, os.WUNTRACED)  # returns once the process has stopped itself at the point
        assert proc.poll() is None
        assert _view(run) == campaign[1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _view(run) == campaign[1]
    done = subprocess.run([sys.executable, "-m", "autointerp.cli", "compact", "--run", str(run), "--grace-s", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _view(run) == campaign[1]
    for kind in ("explanations", "scores"):
        folder = run / "results" / kind
        assert len(list(folder.glob("part-*.parquet"))) == 1, sorted(p.name for p in folder.iterdir())
        assert not list(folder.glob(".tmp-*")) and not (folder / "compaction.json").exists()
    assert "explanations: " in done.stdout and "1 parts now read" in done.stdout


def test_compact_names_a_missing_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autointerp.cli", "compact", "--run", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no run at ")
