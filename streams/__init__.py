"""Task streams for continual-learning benchmarks."""
