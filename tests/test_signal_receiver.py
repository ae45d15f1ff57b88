"""Tests for framerpc.signal_receiver, alone: a bare PUB socket publishes
native and legacy JSON emissions, and garbage, to an RPCSignalReceiver."""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from conftest import wait_until
from signal_helpers import synced_receiver

from framerpc.protocol import SignalEmission, encode_signal
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver


class Listener:
    """Records every call; raises on the values in ``fail_on``."""

    def __init__(self, fail_on: tuple = ()) -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def __call__(self, *args) -> None:
        self.calls.append(args)
        if args in self.fail_on:
            raise RuntimeError(f"listener failure on {args}")


@pytest.fixture
def pub(ctx, url) -> Iterator[tuple[zmq.Socket, str]]:
    """A PUB socket bound on each transport, and the URL to subscribe to."""
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    if url.startswith("tcp"):
        endpoint = f"{url}:{sock.bind_to_random_port(url)}"
    else:
        sock.bind(url)
        endpoint = url
    yield sock, endpoint
    sock.close()


@pytest.fixture
def signals() -> dict[str, RPCSignal]:
    return {"count": RPCSignal(int), "pair": RPCSignal(tuple[int, str])}


@pytest.fixture
def receiver(ctx, pub, signals) -> Iterator[RPCSignalReceiver]:
    """A started receiver, subscribed (handshake done), stopped at the end."""
    with synced_receiver(ctx, pub, signals) as thread:
        yield thread


def _publish(pub, name: str, *args) -> None:
    pub[0].send_multipart(encode_signal(SignalEmission(name, list(args))))


def test_native_emissions_emit_the_local_signals(pub, signals, receiver):
    count, pair = Listener(), Listener()
    signals["count"].connect(count)
    signals["pair"].connect(pair)
    for value in range(5):
        _publish(pub, "count", value)
    _publish(pub, "pair", [3, "three"])
    assert wait_until(lambda: len(pair.calls) == 1)
    assert count.calls == [(value,) for value in range(5)]
    assert pair.calls == [((3, "three"),)]  # the list was coerced to a tuple
    assert type(pair.calls[0][0]) is tuple


def test_legacy_json_emission_emits_the_local_signal(pub, signals, receiver):
    listener = Listener()
    signals["count"].connect(listener)
    legacy = {"event": "EMIT_SIGNAL", "signal": "count", "args": [1], "blocking": False}
    pub[0].send(json.dumps(legacy).encode())
    assert wait_until(lambda: listener.calls == [(1,)])


_GARBAGE = [
    [b""],
    [b"\xc1\xc1 not msgpack"],
    [msgpack.packb([1, 2])],
    [msgpack.packb({"v": 99, "e": "EMIT_SIGNAL", "s": "count", "x": [1]})],
    [msgpack.packb({"v": 1, "e": "METHOD_CALL", "s": "count", "x": [1]})],
    [msgpack.packb({"v": 1, "e": "EMIT_SIGNAL", "s": "count", "x": 1})],
    [msgpack.packb({"v": 1, "e": "EMIT_SIGNAL", "s": "count", "x": [1]}), b"extra"],
    [
        msgpack.packb(
            {
                "v": 1,
                "e": "EMIT_SIGNAL",
                "s": "count",
                "x": [msgpack.ExtType(1, msgpack.packb(2))],
            }
        )
    ],
    [b"{not json"],
    [b'{"event": "EMIT_SIGNAL", "signal": 5, "args": [1]}'],
    [b'{"event": "METHOD_CALL", "signal": "count", "args": [1]}'],
    [b'{"event": "EMIT_SIGNAL", "signal": "count", "args": 1}'],
    [b'["EMIT_SIGNAL"]'],
    [b'{"\xff\xfe": 1}'],
    encode_signal(SignalEmission("unknown_signal", [1])),
]


def test_garbage_is_ignored_and_later_emissions_arrive(pub, signals, receiver):
    listener = Listener()
    signals["count"].connect(listener)
    for frames in _GARBAGE:
        pub[0].send_multipart(frames)
    _publish(pub, "count", 42)
    assert wait_until(lambda: listener.calls == [(42,)])
    assert receiver.is_alive()


def test_deeply_nested_json_is_ignored(pub, signals, receiver):
    """Regression: json.loads raised RecursionError (not a ValueError), which
    escaped the receive loop and ended the thread."""
    listener = Listener()
    signals["count"].connect(listener)
    pub[0].send(b'{"args": ' + b"[" * 100_000)
    _publish(pub, "count", 1)
    assert wait_until(lambda: listener.calls == [(1,)])
    assert receiver.is_alive()


def test_arguments_that_fail_their_types_are_emitted_as_received(
    pub, signals, receiver
):
    listener = Listener()
    signals["count"].connect(listener)
    _publish(pub, "count", "not an int")
    _publish(pub, "count", 1, 2)
    assert wait_until(lambda: len(listener.calls) == 2)
    assert listener.calls == [("not an int",), (1, 2)]


def test_listener_exception_does_not_stop_the_receiver(pub, signals, receiver):
    failing, other = Listener(fail_on=((1,),)), Listener()
    signals["count"].connect(failing)
    signals["pair"].connect(other)
    for value in range(3):
        _publish(pub, "count", value)
    _publish(pub, "pair", [1, "one"])
    assert wait_until(lambda: len(other.calls) == 1)
    assert failing.calls == [(0,), (1,), (2,)]
    assert receiver.is_alive()


def test_stop_ends_the_thread_and_closes_the_socket(receiver):
    receiver.stop()
    receiver.join(timeout=5)
    assert not receiver.is_alive()
    assert receiver.socket.closed


def test_stop_before_start_closes_the_socket(ctx):
    """The ``ctx`` fixture would hang on an open SUB socket."""
    receiver = RPCSignalReceiver(ctx, "inproc://nobody-publishes", {})
    receiver.stop()
    assert receiver.socket.closed


def test_invalid_url_raises_and_closes_the_socket(ctx):
    """Regression: the SUB socket was left open when connect() failed; only
    the garbage collector closed it (with a ResourceWarning), and never while
    the exception's traceback was kept."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(zmq.ZMQError):
            RPCSignalReceiver(ctx, "bogus://nowhere", {"count": RPCSignal(int)})
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_handshake_tokens_of_other_clients_are_not_kept(tcp_camera, connect):
    first = connect(tcp_camera.url)
    for _ in range(3):
        connect(tcp_camera.url)
    assert first._signal_receiver._tokens == {}
