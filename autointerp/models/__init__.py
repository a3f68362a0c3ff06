"""The models a run reads: the subject LM and its hookpoints, the coders (SAEs, transcoders, neuron
baselines) and their training, the corpus, the logit lens, and the sentence embedder."""
