"""Side-by-side runner: ``python benchmarks/run.py --help``.

The same as ``framerpc bench``; the code lives in :mod:`framerpc.bench`
so that the server processes it spawns can import it from anywhere.
"""

import sys
from pathlib import Path

try:
    from framerpc.bench.run import main
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from framerpc.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
