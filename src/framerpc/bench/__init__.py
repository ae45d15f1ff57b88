"""The benchmark runner's old import path: it lives in
``framerpc.tools.bench`` (``framerpc bench``; ``run.main``)."""

from framerpc.tools.bench.run import main

__all__ = ["main"]
