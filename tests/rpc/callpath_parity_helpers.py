"""Helpers shared by tests/rpc/test_callpath_parity*.py."""

from __future__ import annotations

import numpy as np
from engines import CALLPATH_ENGINES
from router_dealer import WAIT_MS  # noqa: F401 (the pair's receive bound, re-exported)

from framerpc import protocol
from framerpc.protocol import Reply

ENGINES = CALLPATH_ENGINES
_pure = CALLPATH_ENGINES[0].values[0]
_compiled = CALLPATH_ENGINES[1].values[0]


class Target:
    """What a Responder calls; ``calls`` counts the echo calls."""

    def __init__(self):
        self.calls = 0

    def echo(self, value):
        self.calls += 1
        return value

    def grab(self, size):
        return np.arange(size, dtype=np.uint16), {"size": size}

    def fail(self):
        raise ValueError("on purpose")

    def bad_buffer(self):
        return b"no info dict"

    def unsendable(self):
        return {1, 2}


def _failed(request_id, name, exc):
    # the traceback of the exception being handled must be readable here
    import traceback

    return protocol.encode_reply(
        Reply(request_id, False, error=repr(exc), traceback=traceback.format_exc())
    )
