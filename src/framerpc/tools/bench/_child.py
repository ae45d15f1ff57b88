"""A benchmark process: ``python _child.py FD LIBRARY CPUS`` (see processes.py).

Run as a script, not imported: it loads the benchmark package from this
folder under the private name ``_framerpc_bench`` (whose modules import
framerpc only when they use it), puts LIBRARY, the folder holding the
framerpc package to measure, first on ``sys.path`` unless it is there
already (the parent checks which framerpc ran), pins the process to
CPUS (comma-separated, empty: no pinning), then runs the task the parent
sends on the pipe FD.
"""

import importlib.util
import os
import sys
from multiprocessing.connection import Connection


def main() -> None:
    """Set the process up, then hand the pipe to ``processes.child_main``."""
    fd, library, cpus = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    here = os.path.dirname(os.path.abspath(__file__))
    # this folder is on sys.path as the script's: its modules are not top-level
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if library not in sys.path:  # (an installed one is, with the stdlib first)
        sys.path.insert(0, library)
    if cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    spec = importlib.util.spec_from_file_location(
        "_framerpc_bench",
        os.path.join(here, "__init__.py"),
        submodule_search_locations=[here],
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    processes = importlib.import_module("_framerpc_bench.processes")
    processes.child_main(Connection(fd))


if __name__ == "__main__":
    main()
