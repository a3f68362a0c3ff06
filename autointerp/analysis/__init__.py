"""The paper's analyses over a run's stored results, one module per study.

  scores     score table, accuracy per decile, intervention (Fig. 4): the per-run score views
  agreement  Spearman correlation between scorers with bootstrap CIs, beside each scorer's validity
  sampling   explanation quality by sampling strategy (top / random / quantiles / mix) and decile
  coders     SAE latents vs raw neurons vs top-k neurons vs random directions
  overlap    Hungarian matching of latents at adjacent layers (decoders and explanations)
  stats      the confidence intervals all of them use

Each study module holds pure functions from stored results to tables; the figures are in
autointerp/app/figures.py and the work that produces a study's results (explaining, scoring,
matching) in autointerp/runs/studies.py.
"""

from autointerp.analysis.scores import (HEADLINE, HEADLINE_LABEL, INTERVENTION_CONDITIONS, KEYS, SCORE_RANGE,  # noqa: F401
                                        accuracy_per_decile, chance, headline, histogram_table, interval_table,
                                        intervention_by_kl,
                                        intervention_vs_fuzzing, linear_fit, score_range, score_table,
                                        scorer_columns, scorer_correlations)
