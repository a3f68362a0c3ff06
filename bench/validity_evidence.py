"""Per-example evidence behind bench/validity.py: from its --out JSON, per scorer, the mean P(Yes)
under the latent's explanation and under the neutral one, and the calibrated probability, for
activating windows by decile and for silent windows.

    .venv/bin/python bench/validity_evidence.py results.json
"""

from __future__ import annotations

import json
import sys

import pandas as pd


def main() -> None:
    rows = json.loads(open(sys.argv[1]).read())
    frames = []
    for r in rows:
        for d in r.get("decisions", []):
            frames.append({"scorer": r["scorer"], "latent": r["latent"], **d})
    df = pd.DataFrame(frames)
    df = df[df.scorer.isin(["detection", "fuzzing"])]
    df["group"] = df["quantile"].where(df["activating"], 0)
    cols = {"p_explanation": "P(Yes|expl)", "p_neutral": "P(Yes|neutral)", "probability": "calibrated"}
    table = df.groupby(["scorer", "group"])[list(cols)].mean().rename(columns=cols).round(3)
    table["n"] = df.groupby(["scorer", "group"]).size()
    print("group 0 = silent windows, 1..10 = activation decile of activating windows (10 = strongest)")
    print(table.to_string())
    spread = df.groupby("scorer")[["p_explanation", "p_neutral"]].quantile([0.05, 0.95]).round(3)
    print("\n5th / 95th percentile of P(Yes) over all test windows")
    print(spread.to_string())


if __name__ == "__main__":
    main()
