"""Side-by-side runner: ``python benchmarks/run.py --help``.

The same as ``framerpc bench``; the code lives in
``src/framerpc/tools/bench/``, from where the processes it spawns load it.
"""

import sys
from pathlib import Path

try:
    from framerpc.tools.bench.run import main
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from framerpc.tools.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
