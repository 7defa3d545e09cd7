"""Scheduling: plain problem data, the CP-SAT model, pipeline planning, and the checker."""
