"""The bottom layer: errors, paths, devices, fault points, milestones, job progress reporting and
atomic file writes. Nothing here imports another autointerp package (import-linter checks it)."""
