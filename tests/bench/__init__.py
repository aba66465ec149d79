"""Smoke runs of the benchmarks in bench/: each works end to end in a short mode; the figures
are not checked."""
