"""Sorted-F offline batch planner for backlogs under a KV budget, exact solver, heuristics."""
