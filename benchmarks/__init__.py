"""cai_frames measured against the ways people load scores without it.

Run from the repository root::

    python -m benchmarks                      # medium: a few minutes
    python -m benchmarks --size small         # the smoke run CI does
    python -m benchmarks --size full          # adds a real-size batch (46.7M rows)
    python -m benchmarks --cases warm sql --repeat 5 --json bench.json

The cases (:mod:`benchmarks.suite`) generate their data with the emulator into a data
folder kept between runs, measure every variant in a fresh process
(:mod:`benchmarks.jobs`), a few times each, taking turns, and compare medians. Each row
is a ratio against a baseline measured in the same run on the same files, with the
target it is held to. Slow baselines (pandas per part, DuckDB ``.df()``, curl one by
one) run once, under a time limit.
"""
