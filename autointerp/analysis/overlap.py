"""Adjacent-layer overlap: do latent sets at layers L and L+1 learn the same features?

Latents of set A are matched one-to-one to latents of set B with the Hungarian algorithm
(scipy's linear_sum_assignment, maximising total similarity) on
  * decoder: the cosine of their decoder directions, every latent; baseline: the same match
    against as many Gaussian vectors with B's mean and covariance (B's geometry, no features).
    Shuffling coordinates (the old baseline) erased the anisotropy both sets share, so independent
    sets seemed to overlap (0.52 vs 0.25 for two independent sets with four enlarged dimensions);
    the headline is the excess of the matched similarity over this null, with a Welch t interval;
  * explanation: the cosine of MiniLM embeddings of their explanations, for a sample of A's
    latents and their decoder partners in B; baseline: the same explanations paired at random.
    "recovered" is the share of explanation matches that pick the decoder partner (chance 1/n),
    and "partner explanation" compares decoder partners' explanation similarity with random pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from autointerp.analysis.stats import MIN_N, t_ci, welch_ci
from autointerp.core.errors import AutointerpError

BASES = ("decoder", "explanation")
N_PERMUTATIONS = 1000
TABLE_COLUMNS = ["family", "pair", "basis", "n", "matched_mean", "matched_lo", "matched_hi", "baseline",
                 "baseline_mean", "baseline_lo", "baseline_hi", "excess_mean", "excess_lo", "excess_hi",
                 "random_pair_mean", "recovered", "set_a", "set_b"]
DECODER_BASELINE = "Gaussian, B's mean and covariance"


def hungarian(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the one-to-one match with the largest total similarity."""
    return linear_sum_assignment(np.asarray(sim, dtype=np.float64), maximize=True)


def _unit(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def _site_layer(hookpoint: str) -> tuple[str, int | None]:
    site, _, layer = hookpoint.rpartition(".")
    return (site, int(layer)) if layer.isdigit() else (hookpoint, None)


def family(store, name: str) -> str:
    """'<site> <coder kind>', e.g. 'resid_post sae' or 'mlp_out sae': what a pair is grouped by."""
    entry = store.info.get("coders", {}).get(name, {})
    site, _ = _site_layer(entry.get("hookpoint") or name.split("-")[0])
    return f"{site} {entry.get('kind', '?')}"


def adjacent_pairs(store) -> list[tuple[str, str]]:
    """Every (A, B) of one coder kind at one site with B's layer = A's layer + 1."""
    by_key: dict[tuple, dict[int, str]] = {}
    for name, entry in store.info.get("coders", {}).items():
        if name not in store.hookpoints():
            continue
        site, layer = _site_layer(entry.get("hookpoint") or name)
        if layer is not None:
            by_key.setdefault((site, entry.get("kind")), {})[layer] = name
    pairs = [(layers[layer], layers[layer + 1]) for key, layers in sorted(by_key.items(), key=lambda kv: str(kv[0]))
             for layer in sorted(layers) if layer + 1 in layers]
    return pairs


def parse_pairs(store, pairs: list[str]) -> list[tuple[str, str]]:
    if not pairs:
        found = adjacent_pairs(store)
        if not found:
            raise AutointerpError(f"run {store.run_dir.name} has no latent sets of one kind at adjacent layers "
                                  f"(sets: {', '.join(store.hookpoints())}): cache SAEs at layers L and L+1, or "
                                  f"pass --pairs A:B")
        return found
    out = []
    for p in pairs:
        a, sep, b = p.partition(":")
        if not sep or not a or not b:
            raise AutointerpError(f"pair {p!r} is not A:B: write e.g. resid_post.14:resid_post.15")
        unknown = [s for s in (a, b) if s not in store.hookpoints()]
        if unknown:
            raise AutointerpError(f"run {store.run_dir.name} has no latent sets {unknown}: choose from "
                                  f"{', '.join(store.hookpoints())}")
        out.append((a, b))
    return out


def decoders(store, a: str, b: str, loaded: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two sets' decoder directions [n_latents, d], checked to live in one space; `loaded`
    keeps directions already read (set -> array) across the pairs of one study."""
    from autointerp.models.coders import coder_from_manifest

    loaded = {} if loaded is None else loaded
    for name in (a, b):
        if name not in loaded:
            loaded[name] = coder_from_manifest(store.info, name).decoder_directions().float().numpy()
    wa, wb = loaded[a], loaded[b]
    if wa.shape[1] != wb.shape[1]:
        raise AutointerpError(f"latent sets {a} and {b} decode into spaces of different widths ({wa.shape[1]} vs "
                              f"{wb.shape[1]}): decoder directions can only be matched within one kind of "
                              f"hookpoint, e.g. resid_post.14:resid_post.15")
    return wa, wb


@dataclass
class DecoderMatch:
    rows: np.ndarray
    cols: np.ndarray
    similarity: np.ndarray  # cosine of each matched pair
    baseline: np.ndarray  # matched cosines against Gaussian vectors with B's mean and covariance
    random_pair_mean: float

    def summary(self) -> dict:
        return {"n": len(self.similarity), **_ci("matched", self.similarity), "baseline": DECODER_BASELINE,
                **_ci("baseline", self.baseline), **excess_ci(self.similarity, self.baseline),
                "random_pair_mean": self.random_pair_mean, "recovered": None}


def excess_ci(matched, baseline, level: float = 0.95) -> dict:
    """excess_mean/lo/hi: mean(matched) - mean(baseline) with a Welch t interval."""
    return dict(zip(("excess_mean", "excess_lo", "excess_hi"), welch_ci(matched, baseline, level)))


def geometry_null(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many Gaussian vectors as w has rows, with w's mean and covariance: the same geometry
    (mean direction, dominant dimensions), no alignment with any feature of another set."""
    w = np.asarray(w, dtype=np.float64)
    mean = w.mean(axis=0)
    centered = w - mean
    cov = centered.T @ centered / max(len(w) - 1, 1)  # d x d: small next to the n x n cosine matrix
    vals, vecs = np.linalg.eigh(cov)
    z = rng.standard_normal((len(w), w.shape[1]))
    return mean + (z * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _ci(prefix: str, values) -> dict:
    return dict(zip((f"{prefix}_mean", f"{prefix}_lo", f"{prefix}_hi"), t_ci(values)))


def match_decoders(wa: np.ndarray, wb: np.ndarray, seed: int = 0) -> DecoderMatch:
    ua, ub = _unit(wa), _unit(wb)
    sim = ua @ ub.T
    rows, cols = hungarian(sim)
    rng = np.random.default_rng(seed)
    base = ua @ _unit(geometry_null(ub, rng)).T
    br, bc = hungarian(base)
    perm = rng.permutation(sim.shape[1])[: sim.shape[0]]
    return DecoderMatch(rows, cols, sim[rows, cols], base[br, bc],
                        float(sim[np.arange(len(perm)), perm].mean()))


@dataclass
class ExplanationMatch:
    sim: np.ndarray  # [n, n]: explanation i of A vs explanation j of B; row i's decoder partner is column i
    rows: np.ndarray
    cols: np.ndarray
    permuted: np.ndarray  # mean similarity of N_PERMUTATIONS random pairings

    def summary(self) -> dict:
        """The explanation match's headline is `recovered` against chance 1/n: a maximised match
        always beats random pairs (0.137 vs 0.089 for unrelated embeddings), and the same match on
        any relabelling of the matrix is the same maximum, so its similarity has no fair baseline
        of its own. excess = recovered - 1/n, with a Clopper-Pearson interval on recovered."""
        from scipy.stats import binomtest

        matched = self.sim[self.rows, self.cols]
        n = len(matched)
        hits = int(np.sum(self.rows == self.cols))
        ci = binomtest(hits, n).proportion_ci(0.95)
        return {"n": n, **_ci("matched", matched), "baseline": "chance of recovering the partner (1/n)",
                "baseline_mean": 1 / n, "baseline_lo": np.nan, "baseline_hi": np.nan,
                "random_pair_mean": float(self.permuted.mean()), "recovered": hits / n,
                "excess_mean": hits / n - 1 / n, "excess_lo": ci.low - 1 / n, "excess_hi": ci.high - 1 / n}

    def partner_summary(self) -> dict:
        """Explanation similarity of decoder partners (the diagonal) against random pairings."""
        diag = np.diag(self.sim)
        lo, hi = np.percentile(self.permuted, [2.5, 97.5])
        excess = t_ci(diag - self.permuted.mean())  # like with like: neither side is maximised
        return {"n": len(diag), **_ci("matched", diag), "baseline": "random pairing",
                "baseline_mean": float(self.permuted.mean()), "baseline_lo": float(lo), "baseline_hi": float(hi),
                "random_pair_mean": float(self.permuted.mean()), "recovered": None,
                **dict(zip(("excess_mean", "excess_lo", "excess_hi"), excess))}


def match_explanations(ea: np.ndarray, eb: np.ndarray, seed: int = 0) -> ExplanationMatch:
    """Hungarian match of unit embeddings ea[i] (latent i of A) and eb[i] (its decoder partner)."""
    if len(ea) < MIN_N:
        raise AutointerpError(f"{len(ea)} explained latent pairs cannot be matched with a CI: at least {MIN_N} "
                              f"are needed")
    sim = np.asarray(ea, dtype=np.float64) @ np.asarray(eb, dtype=np.float64).T
    rows, cols = hungarian(sim)
    rng = np.random.default_rng(seed)
    n = len(sim)
    permuted = np.array([sim[np.arange(n), rng.permutation(n)].mean() for _ in range(N_PERMUTATIONS)])
    return ExplanationMatch(sim, rows, cols, permuted)


def overlap_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The stored summaries of one overlap study as the page shows them, residual stream first."""
    if summary.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    df = summary.assign(pair=summary.set_a + " → " + summary.set_b)
    order = {b: i for i, b in enumerate(("decoder", "explanation", "partner explanation"))}
    df = df.sort_values(["basis", "family", "set_a"], key=lambda c: c.map(order) if c.name == "basis" else c,
                        ignore_index=True)
    return df[TABLE_COLUMNS]
