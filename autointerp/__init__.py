"""autointerp: cache sparse-coder latents, explain and score them with an LLM, run the paper's
analyses, and browse it all in the app. The layers and what may import what: docs/architecture.md."""
