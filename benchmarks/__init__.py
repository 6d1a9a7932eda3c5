"""Benchmarks: corral and the real etcd 3.4 side by side on the same machine.

`python -m benchmarks.run` (what `make bench` runs) starts each server in turn, drives the same
closed-loop workloads with `benchmarks.loadgen`, and writes medians and corral/etcd ratios to
docs/benchmarks.md together with the command that produced them.
"""
