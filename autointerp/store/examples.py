"""A window of tokens with one latent's activations, and the per-latent seed that picks windows."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

def latent_seed(seed: int, hookpoint: str, latent: int) -> int:
    """A seed of its own for each (seed, latent set, latent), the same in every process (Python's
    hash() of a string is not), so latents are not all tested on the same windows or layouts."""
    return int(np.random.SeedSequence([int(seed) % 2**32, zlib.crc32(hookpoint.encode()), int(latent)])
               .generate_state(1)[0])


# The subject's special tokens (the EOS that joins documents, or control tokens the corpus text
# itself contained) are shown as this one neutral marker, in prompts and in the app alike: pasted
# as `<|im_end|>`, a ChatML scorer reads its own end of turn.
SPECIAL_TOKEN_MARK = "⟨sep⟩"


@dataclass
class Example:
    """A window of tokens with one latent's activation on each token."""

    doc_id: int
    start: int  # position of the window's first token in its context
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    quantile: int | None = None  # 1 = lowest slice of activating windows, for quantile sampling

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0
