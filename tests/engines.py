"""Which engine a run tests, for tests that need not run under both.

The README's test command runs the suite twice, once per engine. A test
that does not depend on the live engine (it compares both engines itself,
type-checks, or runs the test command) runs in the compiled run only, so
the pure run does not repeat its work; where the compiled layer is not
built at all, the pure run is the only run and keeps it.
"""

from __future__ import annotations

import importlib

import pytest

import framerpc.framing as _framing


def _compiled_built() -> bool:
    try:
        importlib.import_module("framerpc.wire._framing")
        importlib.import_module("framerpc.transport._zmqio")
    except ImportError:
        return False
    return True


#: Mark for a module or test that the compiled run already covers.
once_per_suite = pytest.mark.skipif(
    _framing.IMPLEMENTATION == "pure" and _compiled_built(),
    reason="engine-independent: the compiled run of the suite covers it",
)


def _compiled_io():  # the compiled message I/O, or None when not built
    try:
        return importlib.import_module("framerpc.transport._zmqio")
    except ImportError:  # pragma: no cover - depends on the build
        return None


#: Both message I/O twins as test parameters (the compiled one skipped,
#: with the reason, where it is not built).
IO_ENGINES = [
    pytest.param(importlib.import_module("framerpc.transport._zmqio_py"), id="pure"),
    pytest.param(
        _compiled_io(),
        id="compiled",
        marks=pytest.mark.skipif(_compiled_io() is None, reason="not built"),
    ),
]
