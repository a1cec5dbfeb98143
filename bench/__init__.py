"""Benchmarks: each prints its figures next to the stock component it replaces."""
