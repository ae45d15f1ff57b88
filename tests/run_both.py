"""Run the test suite twice: compiled engine, then pure-Python engine.

    python tests/run_both.py [pytest arguments...]

framerpc has a compiled framing and I/O layer and pure-Python twins of
it, selected by ``FRAMERPC_PURE=1``; both must pass. This runs
``python -m pytest`` once with the compiled layer and once with the pure
one, always both (a failure in the first does not skip the second),
passes any arguments to both, and exits 0 only if both passed. A run that
collects no test at all (pytest's exit status 5, for example a ``-k`` that
matches nothing) counts as a failure: the suite has tests, so running none
means something is wrong.

Each run spreads its tests over ``WORKERS`` processes with pytest-xdist
(in the test extra) when it is installed and the arguments do not choose
(``-n``, ``--numprocesses``, ``-p no:xdist``); ``FRAMERPC_TEST_WORKERS``
sets the number, 0 runs in one process. Most tests wait on sockets,
child processes and timeouts rather than compute, so on a 2-core machine
three workers take about half the time of one.

The last line printed sums both runs in the plain form
``run_both: N passed, N failed, N skipped`` (errors count as failed).
Only the standard library is used: this runs before anything is imported
from the package under test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

#: pytest's exit status when it collected no test.
NO_TESTS_COLLECTED = 5
ENGINES = (("compiled", None), ("pure", "1"))
#: pytest-xdist workers per run unless the arguments or FRAMERPC_TEST_WORKERS say.
WORKERS = 3


def _worker_args(args: list[str]) -> list[str]:
    """``-n N`` for pytest-xdist, or nothing (see the module docstring)."""
    chosen = any(
        arg == "-n" or arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist"
        for arg in args
    )
    if chosen or importlib.util.find_spec("xdist") is None:
        return []
    workers = os.environ.get("FRAMERPC_TEST_WORKERS", str(WORKERS))
    if not workers.isdigit():
        raise SystemExit(f"FRAMERPC_TEST_WORKERS={workers!r}: a number of workers")
    return ["-n", workers] if int(workers) > 0 else []


def _counts(junit_xml: Path) -> dict[str, int]:
    """Passed, failed (with errors) and skipped tests of one run's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        root = ET.parse(junit_xml).getroot()
    except (OSError, ET.ParseError):  # pytest stopped before writing it
        return counts
    for suite in root.iter("testsuite"):
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += max(0, tests - failed - skipped)
    return counts


def run(engine: str, pure: str | None, args: list[str], folder: Path) -> tuple:
    """One pytest run; its exit status and counts."""
    env = dict(os.environ)
    env.pop("FRAMERPC_PURE", None)  # the compiled run must not inherit it
    if pure is not None:
        env["FRAMERPC_PURE"] = pure
    report = folder / f"{engine}.xml"
    print(f"\n--- run_both: the {engine} engine: python -m pytest {' '.join(args)}")
    sys.stdout.flush()
    # xunit1: the JUnit flavour in which tests may still record_property
    command = [
        sys.executable,
        "-m",
        "pytest",
        *_worker_args(args),
        *args,
        f"--junitxml={report}",
        "-o",
        "junit_family=xunit1",
    ]
    status = subprocess.call(command, env=env)
    return status, _counts(report)


def main(args: list[str]) -> int:
    statuses: dict[str, int] = {}
    total = {"passed": 0, "failed": 0, "skipped": 0}
    with tempfile.TemporaryDirectory(prefix="framerpc-tests-") as folder:
        for engine, pure in ENGINES:
            try:
                status, counts = run(engine, pure, args, Path(folder))
            except KeyboardInterrupt:
                print("\nrun_both: interrupted")
                return 130
            statuses[engine] = status
            for key in total:
                total[key] += counts[key]
    print()
    failed_runs = []
    for engine, status in statuses.items():
        if status == 0:
            verdict = "passed"
        elif status == NO_TESTS_COLLECTED:
            verdict = "FAILED: no test ran"
        else:
            verdict = f"FAILED (pytest exit status {status})"
        if status != 0:
            failed_runs.append(engine)
        print(f"run_both: the {engine} engine {verdict}")
    print(
        f"run_both: {total['passed']} passed, {total['failed']} failed, "
        f"{total['skipped']} skipped"
    )
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
