"""tanl-guard benchmarks (run on demand, not in CI)."""
