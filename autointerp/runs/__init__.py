"""Runners: the one executor (units of work here or on Ray, the same code path) and the thin runners
on it: cache, explain + score (interpret), validate, and the studies."""
