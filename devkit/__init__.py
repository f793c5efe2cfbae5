"""The development kit: the demo, a private SeaweedFS, a local conda channel and a local worker.

Not shipped: the wheel and the worker image hold only `podenv` (users run it); this package
runs from a checkout of the repository (`python -m devkit.demo`, the tests, the benchmarks).
"""
