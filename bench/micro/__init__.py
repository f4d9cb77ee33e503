"""pytest-benchmark micro-benchmarks of hot paths: `pytest bench/micro --benchmark-only`.

They live outside the suite's testpaths (tests/), so a plain `pytest` never runs them.
"""
