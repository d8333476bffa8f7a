"""Side-by-side benchmarks; each module writes its own section of BENCHMARKS.md."""
