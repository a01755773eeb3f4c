"""Refine-and-Prune streaming partitioner and queue routing (pure, no I/O)."""
