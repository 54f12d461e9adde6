"""Benchmarks: each script prints a table and writes it to bench/results/ with the machine it ran on."""
