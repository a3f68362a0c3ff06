"""Simulation scorer (Bills et al. 2023, "all at once"): the scorer LM reads the explanation and
the text laid out one token per line as `token<TAB>unknown`, after worked examples in the same
format (prompts.SIMULATION_FEW_SHOT); at each `unknown` position, the distribution over the digits
0-9 gives an expected activation, all from one forward pass. Score:
Pearson correlation of predicted and true activations over all tokens concatenated (silent
windows count as zeros), and per activation quantile (that quantile's windows plus the silent ones).
Our scale is 0-9, not 0-10: "10" shares its first token with "1" in these tokenizers."""

from __future__ import annotations

import numpy as np

from autointerp.core.errors import AutointerpError
from autointerp.explain.prompts import simulation_line, simulation_messages
from autointerp.score import ScoreContext, ScoreResult
from autointerp.store import Example

SYSTEM = """We're studying neurons in a neural network. Each neuron looks for some particular thing
in a short document. Look at an explanation of what the neuron does, and try to predict its
activations on each token. The activation format is token<tab>activation, activations go from 0 to 9,
"unknown" indicates an unknown activation. Most activations will be 0."""

DIGITS = [str(i) for i in range(10)]


def _layout(client, explanation: str, example: Example) -> tuple[list[int], list[int]]:
    ids = client.token_ids(client.chat_text(simulation_messages(SYSTEM, explanation), "<start>\n"))
    positions = []
    for tok in example.tokens:
        ids += client.token_ids(simulation_line(tok, "")[:-1])  # `token<TAB>`; the digit comes next
        positions.append(len(ids) - 1)
        ids += client.token_ids("unknown\n")
    return ids, positions


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _window_bootstrap_ci(true: list[np.ndarray], predicted: list[np.ndarray], n_boot: int = 1000,
                         seed: int = 0) -> tuple[float | None, float | None]:
    """95 % percentile interval of the all-tokens correlation, resampling whole windows: tokens of
    one window are not independent, so a Fisher z over tokens would be far too narrow."""
    if len(true) < 3:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(true), len(true))
        r = _pearson(np.concatenate([true[i] for i in idx]), np.concatenate([predicted[i] for i in idx]))
        if r is not None:
            values.append(r)
    if len(values) < n_boot // 2:
        return None, None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def score_simulation(client, explanation: str, activating: list[Example], negatives: list[Example]
                     ) -> tuple[dict, list[dict]]:
    if not hasattr(client, "positional_probs"):
        raise AutointerpError(f"the simulation scorer needs per-position probabilities, which {client.name} "
                              f"does not give: use --backend transformers")
    digit_ids = client.answer_token_ids(DIGITS)
    items = [(e, True) for e in activating] + [(e, False) for e in negatives]
    predicted, records = [], []
    all_probs = client.positional_probs([_layout(client, explanation, e) for e, _ in items], digit_ids)
    for (e, act), probs in zip(items, all_probs):
        pred = np.asarray(probs) @ np.arange(10)
        predicted.append(pred)
        records.append({"doc_id": e.doc_id, "start": e.start, "activating": act,
                        "quantile": (e.quantile or 0) if act else 0, "prediction": None,
                        "probability": float(pred.max() / 9), "failed": False, "raw": "",
                        "shown": " ".join(f"{p:.1f}" for p in pred)})
    true = [np.asarray(e.acts, dtype=float) * (1 if act else 0) for e, act in items]
    all_corr = _pearson(np.concatenate(true), np.concatenate(predicted))
    neg_idx = [i for i, (_, act) in enumerate(items) if not act]
    per_q = {}
    for q in sorted({e.quantile for e, act in items if act and e.quantile}):
        idx = [i for i, (e, act) in enumerate(items) if act and e.quantile == q] + neg_idx
        per_q[int(q)] = _pearson(np.concatenate([true[i] for i in idx]), np.concatenate([predicted[i] for i in idx]))
    lo, hi = _window_bootstrap_ci(true, predicted)
    summary = {"n": len(items), "n_failed": 0, "correlation": all_corr, "correlation_per_quantile": per_q,
               "correlation_lo": lo, "correlation_hi": hi}
    return summary, records


def run(ctx: ScoreContext) -> ScoreResult:
    return ScoreResult(*score_simulation(ctx.client, ctx.explanation, ctx.activating, ctx.negatives),
                       mode="all-at-once")
