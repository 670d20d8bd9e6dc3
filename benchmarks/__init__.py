"""Benchmarks: performance and fidelity harness (``make benchmark``)."""
