"""Helpers for tests that write result rows by hand (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path


def explain_as_scored(run: Path, score_rows: list[dict]) -> None:
    """Explanation records for the (hookpoint, latent, explanation) of score rows a test writes:
    the app shows a score only beside the explanation it scored (store.current_scores)."""
    from autointerp.store import append_results

    seen = {(r["hookpoint"], r["latent"]): r["explanation"] for r in score_rows}
    append_results(run, "explanations", [{"hookpoint": hp, "latent": x, "explanation": e, "model": "fixture"}
                                         for (hp, x), e in seen.items()])
