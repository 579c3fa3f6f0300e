"""Benchmarks of ANN backends, the server under load, and retrieval quality."""
