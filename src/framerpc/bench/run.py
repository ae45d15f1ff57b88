"""``python -m framerpc.bench.run``: the runner of ``framerpc.tools.bench``."""

import sys

from framerpc.tools.bench.run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
