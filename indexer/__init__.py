"""Sharded ANN index builds, the SQLite manifest of generations and atomic publishing."""
