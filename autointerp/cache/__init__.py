"""The streaming cache: subject + coders over the corpus, written part by part and published
(finalised) through the store."""
