"""Command-line tools: the framerpc CLI, the demo and the benchmark runner."""
