"""Explaining latents: which windows an explainer sees (sampling), the prompts, and the explainers."""
