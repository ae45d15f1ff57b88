"""The compiled call path (``framerpc.rpc._callpath``) and its pure twin
(``framerpc.rpc._callpath_py``) behave the same: the server's Responder
answers the same messages with the same bytes and leaves the same ones to
the general path; the client's Channel matches, drops and times out alike.
Each runs on its message I/O twin (``framerpc.transport._zmqio`` / ``_zmqio_py``).

The compiled half is skipped (with the reason) when it is not built; CI
builds it.
The Responder against protocol.request_from_header, and the engine switch:
test_callpath_parity_general.py.
"""

from __future__ import annotations

import logging
import threading

import msgpack
import pytest
from callpath_parity_helpers import (
    ENGINES,
    Target,
    _compiled,
    _failed,
    _pure,
)

from framerpc import protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import Reply, Request, RPCEvents
from framerpc.server.dispatch import _check_buffer_result  # the check servers pass in

LOGGER = "framerpc.rpc.callpath"


def _call(rid, method, *args):
    return protocol.encode_request(
        Request(RPCEvents.METHOD_CALL, rid, method, list(args), {})
    )


# name -> (body frames, whether the Responder answers it)
MESSAGES = {
    "json call": (_call(1, "echo", [1, "x"]), True),
    "buffer call": (_call(2, "grab", 40000), True),
    "small buffer call": (_call(3, "grab", 3), True),
    "failing method": (_call(4, "fail"), True),
    "bad buffer result": (_call(5, "bad_buffer"), True),
    "unencodable result": (_call(6, "unsendable"), True),
    "wrong arguments": (_call(7, "echo", 1, 2, 3), True),
    "unknown method": (_call(8, "nope"), False),
    "property get": (
        protocol.encode_request(Request(RPCEvents.PROPERTY_GET, 9, name="echo")),
        False,
    ),
    "wrong version": (
        [
            msgpack.packb(
                {"v": 2, "e": "METHOD_CALL", "i": 1, "m": "echo", "a": [1], "k": {}}
            )
        ],
        False,
    ),
    "version is True": (
        [
            msgpack.packb(
                {"v": True, "e": "METHOD_CALL", "i": 1, "m": "echo", "a": [1], "k": {}}
            )
        ],
        False,
    ),
    "method is a list": (
        [
            msgpack.packb(
                {"v": 1, "e": "METHOD_CALL", "i": 1, "m": ["echo"], "a": [1], "k": {}}
            )
        ],
        False,
    ),
    "kwargs is a list": (
        [
            msgpack.packb(
                {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "echo", "a": [1], "k": []}
            )
        ],
        False,
    ),
    "event is an array": (
        [msgpack.packb({"v": 1, "e": [1, 2], "i": 1, "m": "echo", "a": [], "k": {}})],
        False,
    ),
    "id is a float": (
        [
            msgpack.packb(
                {"v": 1, "e": "METHOD_CALL", "i": 1.0, "m": "echo", "a": [1], "k": {}}
            )
        ],
        False,
    ),
    "args is a map": (
        [
            msgpack.packb(
                {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "echo", "a": {}, "k": {}}
            )
        ],
        False,
    ),
    "json": ([b'{"event": "GET_INVENTORY"}'], False),
    "garbage": ([b"\xc1\xc1"], False),
}


def _answer(engine, router, dealer, body):
    """What ``engine``'s Responder does with ``body``: (handled, reply frames
    as bytes or None, send_failed calls)."""
    send_failures = []
    target = Target()
    responder = engine.Responder(
        router,
        target,
        {"echo": 1000, "fail": 1000, "unsendable": 1000},
        {"grab": 1000, "bad_buffer": 1000},
        _check_buffer_result,
        _failed,
        lambda envelope, exc, rid: send_failures.append((type(exc), rid)),
    )
    dealer.send_multipart([b"", *body])
    frames = engine.recv_frames(router)
    handled = responder.handle(frames)
    if not handled:
        assert target.calls == 0, "declined after calling the method"
    reply = None
    if handled and not send_failures:
        reply = [bytes(f) for f in dealer.recv_multipart(copy=False)]
    return handled, reply, send_failures


@pytest.mark.skipif(_compiled is None, reason="compiled call path not built")
@pytest.mark.parametrize("name", MESSAGES)
def test_responders_answer_alike(pair, name):
    body, answered = MESSAGES[name]
    pure = _answer(_pure, *pair, body)
    compiled = _answer(_compiled, *pair, body)
    assert pure[0] is compiled[0] is answered
    if name in (
        "failing method",
        "bad buffer result",
        "wrong arguments",
        "unencodable result",
    ):
        # tracebacks name the engine's files: compare the rest
        for outcome in (pure, compiled):
            reply = protocol.decode_reply(outcome[1][1:])
            assert not reply.ok and "Traceback" in reply.traceback
        errors = [protocol.decode_reply(o[1][1:]).error for o in (pure, compiled)]
        assert errors[0] == errors[1]
    else:
        assert pure[1:] == compiled[1:]


@pytest.mark.parametrize("engine", ENGINES)
def test_responder_declines_a_longer_envelope(engine, ctx, pair):
    """A REQ behind a proxy adds routing frames: the general path's case."""
    router, _ = pair
    responder = engine.Responder(router, Target(), {"echo": None}, {}, None, None, None)
    frames = [b"peer", b"proxy", b"", *_call(1, "echo", 1)]
    assert responder.handle(frames) is False


@pytest.mark.parametrize("engine", ENGINES)
def test_responder_replies_match_the_protocol_encoders(engine, pair):
    _, reply, _ = _answer(engine, *pair, _call(11, "echo", "x"))
    assert reply[1:] == protocol.encode_result(11, "x")
    _, reply, _ = _answer(engine, *pair, _call(12, "grab", 40000))
    value, info = Target().grab(40000)
    expected = protocol.encode_result(12, value, info, buffer_reply=True)
    assert reply[1:] == [bytes(memoryview(f)) for f in expected]


@pytest.mark.parametrize("engine", ENGINES)
def test_responder_reports_a_frame_it_cannot_send(engine, pair):
    """The error frames come from the server (``failed``): a bad one is
    reported through ``send_failed`` with the request id, not raised."""
    router, dealer = pair
    calls = []
    responder = engine.Responder(
        router,
        Target(),
        {"fail": None},
        {},
        _check_buffer_result,
        lambda rid, name, exc: [object()],
        lambda envelope, exc, rid, frames: calls.append((type(exc), rid)),
    )
    dealer.send_multipart([b"", *_call(13, "fail")])
    assert responder.handle(engine.recv_frames(router)) is True
    assert calls == [(TypeError, 13)]


def _serve_replies(router, replies):
    """Answer one request with ``replies`` (lists of body frames) in order."""

    def run():
        frames = router.recv_multipart()
        for body in replies:
            router.send_multipart([frames[0], b"", *body])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_drops_late_malformed_and_undelimited_replies(engine, pair, caplog):
    router, dealer = pair
    channel = engine.Channel(dealer, "inproc://test")
    thread = _serve_replies(
        router,
        [
            protocol.encode_result(40, "late"),
            [b"\xc1 not msgpack"],
            protocol.encode_result(41, "mine"),
        ],
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        reply = channel.request(_call(41, "echo", "mine"), 41, 2000)
    thread.join()
    assert (reply.request_id, reply.value) == (41, "mine")
    text = caplog.text
    assert "dropped a late reply to request 40" in text
    assert "dropped a malformed reply" in text


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_returns_a_reply_to_an_unreadable_request(engine, pair):
    router, dealer = pair
    channel = engine.Channel(dealer, "inproc://test")
    failure = Reply(-1, False, error="ProtocolError: unreadable")
    thread = _serve_replies(router, [protocol.encode_reply(failure)])
    reply = channel.request(_call(42, "echo"), 42, 2000)
    thread.join()
    assert reply == failure


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_times_out_and_stops_when_closed(engine, pair):
    _, dealer = pair
    channel = engine.Channel(dealer, "inproc://nobody")
    with pytest.raises(TimeoutError, match="no reply from inproc://nobody in time"):
        channel.request(_call(43, "echo"), 43, 50)
    threading.Timer(0.05, setattr, (channel, "closed", True)).start()
    with pytest.raises(RuntimeError, match="closed during a call"):
        channel.request(_call(44, "echo"), 44, None)


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_exchange_returns_any_next_reply(engine, pair):
    router, dealer = pair
    channel = engine.Channel(dealer, "inproc://test")
    thread = _serve_replies(router, [[b"{}"]])
    assert [bytes(f) for f in channel.exchange([b'{"x": 1}'], 2000)] == [b"{}"]
    thread.join()


BAD_REPLIES = {
    "wrong version": {"v": 2, "i": 50, "ok": True, "x": 1},
    "id is a str": {"v": 1, "i": "50", "ok": True, "x": 1},
    "ok is an int": {"v": 1, "i": 50, "ok": 1, "x": 1},
    "info is a list": {"v": 1, "i": 50, "ok": True, "x": b"", "in": [1]},
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", BAD_REPLIES, ids=BAD_REPLIES)
def test_channel_drops_bad_replies_with_the_protocol_s_words(engine, bad, pair, caplog):
    """The compiled Channel checks replies itself: it must refuse what
    protocol.decode_reply refuses, with its words."""
    router, dealer = pair
    header = BAD_REPLIES[bad]
    with pytest.raises(ProtocolError) as expected:
        protocol.decode_reply([msgpack.packb(header)])
    channel = engine.Channel(dealer, "inproc://test")
    thread = _serve_replies(
        router, [[msgpack.packb(header)], protocol.encode_result(50, "good")]
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reply = channel.request(_call(50, "echo"), 50, 2000)
    thread.join()
    assert reply.value == "good"
    assert f"dropped a malformed reply from inproc://test: {expected.value}" in (
        caplog.text
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_call_sends_encode_call_and_returns_failures(engine, pair):
    router, dealer = pair
    channel = engine.Channel(dealer, "inproc://test")
    failure = Reply(51, False, error="ValueError: no", traceback="Traceback...")
    seen = []

    def run():
        frames = router.recv_multipart()
        seen.append(frames[2:])
        router.send_multipart([frames[0], b"", *protocol.encode_reply(failure)])

    thread = threading.Thread(target=run)
    thread.start()
    reply = channel.call(51, "echo", [1, "x"], {"k": 2.5}, 2000)
    thread.join()
    assert seen == [protocol.encode_call(51, "echo", [1, "x"], {"k": 2.5})]
    assert reply == failure
