"""Utilities shared by trainers, commands, tests and benchmarks."""
