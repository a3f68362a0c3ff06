"""Neighbour negatives (issue 23.3): silent windows of the latent taken from the top windows of the
latents whose decoder directions are nearest its own, on the tiny run's real SAE."""

import numpy as np
import pytest

from autointerp.models.coders import coder_from_manifest
from autointerp.core.errors import AutointerpError
from autointerp.explain.sampling import NEIGHBOURS, SamplingConfig, nearest_latents, scoring_examples

SET = "resid_post.2"


def test_neighbour_negatives_are_silent_windows_of_the_nearest_latents(store):
    # the tiny run has 80 windows and its random model's latents are dense: take the sparsest latent
    # that still fires in 10 windows (a test set of one per decile), so its neighbours' top windows
    # hold silent ones
    page, _ = store.latent_table(SET, sort="frequency", limit=256)
    counts = {int(x): len(store.active_windows(SET, int(x))) for x in page.latent}
    latent = min((c, x) for x, c in counts.items() if c >= 10)[1]
    # the nearest latents by decoder cosine, computed here from the SAE's own weights
    d = coder_from_manifest(store.info, SET).decoder_directions().float().numpy()
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = d @ d[latent]
    sims[latent] = -np.inf
    near = nearest_latents(store, SET, latent)
    assert len(near) == NEIGHBOURS and latent not in near
    assert near == [int(i) for i in np.argsort(-sims, kind="stable")[:NEIGHBOURS]]
    cfg = SamplingConfig(test_per_quantile=1, n_negative=12, negatives="neighbours")
    act, neg = scoring_examples(store, SET, latent, cfg)
    assert 0 < len(neg) <= 12 and len({(e.doc_id, e.start) for e in neg}) == len(neg)
    active = store.active_windows(SET, latent)
    silent = set(zip(active.doc_id, active.w))
    for e in neg:
        assert (e.doc_id, (e.start - 1) // store.window) not in silent  # the latent never fires there
        assert e.acts == [0.0] * len(e.tokens) and (e.quantile or 0) == 0
    # each comes from a neighbour's top windows, and the strongest neighbour's best one is first in line
    tops = {(x.doc_id, x.start) for nb in near for x in store.top_examples(SET, nb, 10)}
    assert {(e.doc_id, e.start) for e in neg} <= tops
    # different from random negatives: they are chosen by the decoder, not by chance
    rand = scoring_examples(store, SET, latent, SamplingConfig(test_per_quantile=1, n_negative=12))[1]
    assert {(e.doc_id, e.start) for e in neg} != {(e.doc_id, e.start) for e in rand}


def test_neighbours_on_units_without_a_decoder_is_a_one_line_error(store):
    with pytest.raises(AutointerpError, match="needs decoder directions.*use --negatives random or hard") as e:
        scoring_examples(store, "mlp_neurons.1-topk4", 0, SamplingConfig(negatives="neighbours"))
    assert "\n" not in str(e.value)
    with pytest.raises(AutointerpError, match="unknown negatives 'near': use random, hard, neighbours"):
        scoring_examples(store, SET, 0, SamplingConfig(negatives="near"))
