"""Scorers: each turns (explanation, test examples) into per-example decisions and a summary.

detection  the scorer LLM sees plain windows: does the feature fire here?
fuzzing    windows shown with << >> marks (true ones for activating windows, random tokens for
           silent ones): are the marks consistent with the explanation?
embedding  MiniLM similarity between the explanation and each window; AUROC
"""

SCORERS = ("detection", "fuzzing", "embedding")
