"""Benchmarks: each module is a script that measures one thing and prints a table."""
