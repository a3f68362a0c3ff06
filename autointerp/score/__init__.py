"""Scorers: each turns (explanation, test examples) into per-example decisions and a summary.

detection  the scorer LLM sees plain windows: does the feature fire here?
fuzzing    windows shown with << >> marks (true ones for activating windows, random tokens for
           silent ones): are the marks consistent with the explanation?
embedding  MiniLM similarity between the explanation and each window; AUROC
surprisal  drop in the scorer LM's loss on a window when the explanation is in the prompt; AUROC
simulation predicted per-token activations (0-9, all at once); Pearson correlation with the truth
intruder   no explanation: which of 4 activating windows and 1 silent one does not belong? Share of
           right calls (chance 1/5); how coherent the latent's windows are (scorers/intruder.py)
intervention steer the latent's decoder direction to a target KL and read log P(explanation) on steered
           vs clean continuations (autointerp/intervention/, run by `autointerp score` only)

Each is registered once in autointerp/config.py (SCORER_SPECS: its runner, headline metric, chance
level, range, whether it needs the LLM or an explanation); the store reads the names from there.
A runner takes a ScoreContext and returns a ScoreResult.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from autointerp.config import SCORER_SPECS, InterpretConfig
from autointerp.core.errors import AutointerpError
from autointerp.store import Example


@dataclass
class ScoreContext:
    """What a scorer may read for one latent and one explanation."""

    client: Any  # the LLM client (None when no scorer due needs one)
    embedder: Any  # the sentence embedder (None unless embedding scores or hard negatives)
    cfg: InterpretConfig
    hookpoint: str
    latent: int
    seed: int  # store.latent_seed(cfg.seed, hookpoint, latent): layouts are per latent
    explanation: str | None
    activating: list[Example]
    negatives: list[Example]
    cache: dict | None = None  # P(Yes) readings shared by explanations of one latent (detection/fuzzing)
    also: tuple[str, ...] = ()  # explanations to read in the same passes, for a later call


@dataclass
class ScoreResult:
    summary: dict
    records: list[dict]
    mode: str | None = None
    model: str | None = None  # default: the LLM client's name
    engine: str | None = None  # default: the LLM client's engine


def runner(scorer: str) -> Callable[[ScoreContext], ScoreResult]:
    """The registered run function of a scorer (config.SCORER_SPECS), imported on first use."""
    spec = SCORER_SPECS.get(scorer)
    if spec is None or not spec.runner:
        raise AutointerpError(f"scorer {scorer!r} has no per-latent runner: choose from "
                              f"{', '.join(s.name for s in SCORER_SPECS.values() if s.runner)}")
    module, _, function = spec.runner.partition(":")
    return getattr(importlib.import_module(module), function)
