"""Benchmarks: python -m mpicnn.bench (tables on stdout, JSON on disk)."""
