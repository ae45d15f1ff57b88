"""The compiled call path and its pure twin: the Responder answers exactly what
protocol.request_from_header reads as a plain call, and the engine switch
picks the call path of the message I/O engine.

The compiled half is skipped (with the reason) when it is not built; CI
builds it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import msgpack
import pytest
from callpath_parity_helpers import (
    ENGINES,
    Target,
    _compiled,
    _failed,
    _pure,
)
from engines import once_per_suite

from framerpc import protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import RPCEvents
from framerpc.rpc import callpath
from framerpc.server.dispatch import _check_buffer_result  # the check servers pass in

# -- the Responder and protocol.request_from_header agree ------------------
# The call path holds the only inline checks of a METHOD_CALL; the general
# path reads every request with protocol.request_from_header. Whatever the
# Responder does not answer goes there, so the two must draw the same line.
_VALID_CALL = {"v": 1, "e": "METHOD_CALL", "i": 5, "m": "echo", "a": [1], "k": {}}


_CANDIDATES = [
    None,
    True,
    1,
    2,
    -1,
    1.0,
    "",
    "METHOD_CALL",
    "PROPERTY_GET",
    "echo",
    "nope",
    b"echo",
    [],
    [1],
    {},
    {"value": 1},
]


def _call_variants():
    """The valid call, then each field left out or replaced by each candidate."""
    yield dict(_VALID_CALL)
    for key in _VALID_CALL:
        yield {k: v for k, v in _VALID_CALL.items() if k != key}
        for value in _CANDIDATES:
            yield {**_VALID_CALL, key: value}


@pytest.mark.parametrize("engine", ENGINES)
def test_responder_answers_exactly_the_calls_protocol_reads(engine, pair):
    router, dealer = pair
    methods = {"echo": None}
    declined: list = []
    responder = engine.Responder(
        router,
        Target(),
        methods,
        {},
        _check_buffer_result,
        _failed,
        lambda *failure: pytest.fail(f"send failed: {failure}"),
        fallback=lambda envelope, body, decoded: declined.append(decoded),
    )
    answered_count = 0
    for header in _call_variants():
        dealer.send_multipart([b"", msgpack.packb(header)])
        before = len(declined)
        assert responder.handle(engine.recv_frames(router)) is True
        answered = len(declined) == before
        try:
            request = protocol.request_from_header(dict(header))
            expected = (
                request.event is RPCEvents.METHOD_CALL and request.method in methods
            )
        except ProtocolError:
            expected = False
        assert answered is expected, header
        if answered:
            answered_count += 1
            reply = protocol.decode_reply(dealer.recv_multipart()[1:])
            assert reply.request_id == header["i"]
        else:  # decoded once: the general path gets the header itself
            assert declined[-1] == header
    assert 0 < answered_count < len(list(_call_variants()))


# -- the engine switch ---------------------------------------------------------
def _live_call_path(pure: bool) -> str:
    """What a fresh interpreter's switch picks: "call path, I/O, module"."""
    env = {k: v for k, v in os.environ.items() if k != "FRAMERPC_PURE"}
    if pure:
        env["FRAMERPC_PURE"] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from framerpc import transport; from framerpc.rpc import callpath; "
            "print(callpath.IMPLEMENTATION, transport.IO_IMPLEMENTATION, "
            "callpath.Channel.__module__, callpath.Responder.__module__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@once_per_suite
def test_the_call_path_follows_the_message_io_engine():
    pure_module = "framerpc.rpc._callpath_py"
    assert _live_call_path(True) == f"pure pure {pure_module} {pure_module}"
    compiled_module = "framerpc.rpc._callpath"
    expected = (
        f"compiled compiled {compiled_module} {compiled_module}"
        if _compiled is not None
        else f"pure pure {pure_module} {pure_module}"
    )
    assert _live_call_path(False) == expected


def test_select_engine_lists_the_public_names():
    names = callpath.select_engine("pure")
    assert set(names) == set(callpath.PUBLIC_API)
    assert names["Channel"] is _pure.callpath.Channel
    assert names["WAIT_SLICE_MS"] == callpath.WAIT_SLICE_MS
    with pytest.raises(KeyError):
        callpath.select_engine("fast")
