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

Their names (SCORERS, EXPLANATION_FREE) are in autointerp/config.py, which the store reads too.
"""
