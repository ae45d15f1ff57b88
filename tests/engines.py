"""Which engine a run tests, for tests that need not run under both.

The README's test command runs the suite twice, once per engine. A test
that does not depend on the live engine (it compares both engines itself,
type-checks, or runs the test command) runs in the compiled run only, so
the pure run does not repeat its work; where the compiled layer is not
built at all, the pure run is the only run and keeps it.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

import framerpc.framing as _framing


def _compiled_built() -> bool:
    try:
        importlib.import_module("framerpc.wire._framing")
        importlib.import_module("framerpc.transport._zmqio")
        importlib.import_module("framerpc.rpc._callpath")
        importlib.import_module("framerpc.wire._shmpath")
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


def _callpath_engine(callpath_name: str, io_name: str) -> SimpleNamespace | None:
    """A call path twin with the message I/O twin it runs on (None when
    not built): ``Channel``, ``Responder``, ``send_frames``, ``recv_frames``,
    ``release_returned_buffers``, and the two modules as ``callpath``, ``io``."""
    try:
        callpath = importlib.import_module(callpath_name)
        io = importlib.import_module(io_name)
    except ImportError:  # pragma: no cover - depends on the build
        return None
    return SimpleNamespace(
        Channel=callpath.Channel,
        Responder=callpath.Responder,
        send_frames=io.send_frames,
        recv_frames=io.recv_frames,
        release_returned_buffers=io.release_returned_buffers,
        callpath=callpath,
        io=io,
    )


_compiled_callpath = _callpath_engine(
    "framerpc.rpc._callpath", "framerpc.transport._zmqio"
)

#: Both call path twins (framerpc.rpc), each with its message I/O, as test
#: parameters (the compiled one skipped, with the reason, where not built).
CALLPATH_ENGINES = [
    pytest.param(
        _callpath_engine("framerpc.rpc._callpath_py", "framerpc.transport._zmqio_py"),
        id="pure",
    ),
    pytest.param(
        _compiled_callpath,
        id="compiled",
        marks=pytest.mark.skipif(_compiled_callpath is None, reason="not built"),
    ),
]
