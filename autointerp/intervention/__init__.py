"""Intervention scoring (the paper's output-side scorer, as delphi implemented it).

steering.py  add alpha x a unit direction at a hookpoint on every position; full forward passes
             (lm_head included) and greedy batched continuations under steering
search.py    the alpha at which KL(clean || steered) of the next-token distribution hits a target
scorer.py    per latent: search, continuations, the scorer LM's log P(explanation | text) on steered
             vs clean continuations, with random-direction and random-explanation baselines
output.py    output-based explanations: the explainer reads clean vs steered continuations
playground.py  steering one typed prompt (the app's Steer panel)
"""
