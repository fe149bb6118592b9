"""Benchmarks: scripts that measure the package and write their tables to benchmarks/results/.

Run each from the repository root as a module, e.g. `python -m benchmarks.step_overhead --help`.
"""
