"""The device of the soak test, and the functions its processes run.

Importable by ``multiprocessing`` children started with "spawn": the
server process runs :func:`serve`, client processes run
:func:`client_process`, client threads run :func:`run_client`.

Every call names its client and its sequence number; the server records
them, so the test can check that no call was lost or duplicated, and it
logs every signal it emits, so the test can check that each subscriber
received all of them in order.
"""

from __future__ import annotations

import threading
import time
import traceback
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import zmq

from framerpc.client import RPCClient
from framerpc.property import RPCProperty
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal

#: Size of the buffers echoed by ``echo_buffer`` (bytes).
BUFFER_SIZE = 1 << 20
#: Longest wait (s) at a barrier: catches a hang only.
WAIT_S = 60.0
#: Longest wait (s) for the last signals once every call returned.
SIGNAL_WAIT_S = 10.0


class Soak(ABC):
    """What the soak clients call."""

    ticked = RPCSignal(int, int)  # (client, seq), emitted by tick()
    value = RPCProperty(doc="Set to [client, seq] by every client in turn.")

    @abstractmethod
    def echo(self, client: int, seq: int, payload: Any) -> list:
        """Return ``[client, seq, payload]``."""

    @abstractmethod
    def echo_buffer(self, client: int, seq: int, data: Any) -> tuple:
        """Return ``(data, {"client": client, "seq": seq})`` (zero-copy)."""

    @abstractmethod
    def tick(self, client: int, seq: int) -> list:
        """Emit ``ticked(client, seq)``; return ``[client, seq]``."""

    @abstractmethod
    def calls(self, client: int) -> list[int]:
        """Sequence numbers of ``client``'s calls, in arrival order."""

    @abstractmethod
    def emitted(self) -> list[list[int]]:
        """Every ``[client, seq]`` emitted, in emission order."""


class SoakServer(Soak, RPCServer):
    """Records every call; runs in its own process."""

    def __init__(self, context: zmq.Context, url: str) -> None:
        self._calls: dict[int, list[int]] = {}
        self._emitted: list[list[int]] = []
        self._value: list[int] = []
        RPCServer.__init__(self, context, url)

    def _record(self, client: int, seq: int) -> None:
        self._calls.setdefault(client, []).append(seq)

    def _get_value(self) -> list[int]:
        return self._value

    def _set_value(self, value: list[int]) -> None:
        self._record(*value)
        self._value = value

    value = RPCProperty(_get_value, _set_value)

    @RPCServer.register_method_json
    def echo(self, client: int, seq: int, payload: Any) -> list:
        self._record(client, seq)
        return [client, seq, payload]

    @RPCServer.register_method_buffer
    def echo_buffer(self, client: int, seq: int, data: Any) -> tuple:
        self._record(client, seq)
        return data, {"client": client, "seq": seq}

    @RPCServer.register_method_json
    def tick(self, client: int, seq: int) -> list:
        self._record(client, seq)
        self._emitted.append([client, seq])
        self.ticked.emit(client, seq)
        return [client, seq]

    @RPCServer.register_method_json
    def calls(self, client: int) -> list[int]:
        return list(self._calls.get(client, []))

    @RPCServer.register_method_json
    def emitted(self) -> list[list[int]]:
        return list(self._emitted)


@RPCClient.register_interface(Soak)
class SoakProxy(Soak, RPCClient):
    """Client side of :class:`SoakServer`."""


def serve(conn: Any) -> None:
    """Server process: bind on loopback, send the URL on ``conn``, serve."""
    context = zmq.Context()
    try:
        server = SoakServer(context, "tcp://127.0.0.1")
        conn.send(server.url)
        server.serve_forever()
    finally:
        conn.close()
        context.term()


def kind_of(seq: int) -> str:
    """The call a client makes at step ``seq`` (the same schedule for all)."""
    step = seq % 10
    if step in (1, 6):
        return "buffer"
    if step in (3, 8):
        return "property"
    if step == 4:
        return "tick"
    return "echo"


def ticks_per_client(calls: int) -> int:
    """How many signals one client's schedule emits."""
    return sum(kind_of(seq) == "tick" for seq in range(calls))


def _payload(client: int, seq: int) -> dict:
    """An echo payload unique to the call, with nested values and an array."""
    return {
        "who": [client, seq],
        "text": f"client {client} call {seq}",
        "nested": {"f": seq / 7, "b": bytes([client % 256, seq % 256]), "n": None},
        "array": np.full((2, 3), seq, dtype=np.int32),
    }


def _same_payload(got: Any, sent: dict) -> bool:
    return (
        type(got) is dict
        and got["who"] == sent["who"]
        and got["text"] == sent["text"]
        and got["nested"] == sent["nested"]
        and isinstance(got["array"], np.ndarray)
        and got["array"].dtype == sent["array"].dtype
        and np.array_equal(got["array"], sent["array"])
    )


def run_client(
    url: str,
    client: int,
    calls: int,
    warmup: int,
    barrier: Any,
    expected_signals: int,
) -> dict:
    """One soak client: ``calls`` mixed calls, checked one by one.

    Waits at ``barrier`` once connected (so every subscriber is live before
    any signal), after ``warmup`` calls (the test samples memory) and after
    the last call. Returns a report (plain values: it crosses processes).
    """
    errors: list[str] = []
    received: list[list[int]] = []
    lock = threading.Lock()

    def on_tick(sender: int, seq: int) -> None:
        with lock:
            received.append([sender, seq])

    context = zmq.Context()
    buffer = np.random.default_rng(client).integers(0, 256, BUFFER_SIZE, np.uint8)
    elapsed = 0.0
    try:
        with SoakProxy(context, url, timeout=10_000) as proxy:
            proxy.ticked.connect(on_tick)
            barrier.wait(WAIT_S)
            start = time.perf_counter()
            for seq in range(calls):
                if seq == warmup:
                    elapsed += time.perf_counter() - start
                    barrier.wait(WAIT_S)
                    start = time.perf_counter()
                try:
                    error = _one_call(proxy, client, seq, buffer)
                except Exception as exc:  # a timeout, a closed socket...
                    error = f"{type(exc).__name__}: {exc}"
                if error:
                    errors.append(f"client {client} call {seq}: {error}")
            elapsed += time.perf_counter() - start
            barrier.wait(WAIT_S)
            deadline = time.monotonic() + SIGNAL_WAIT_S
            while len(received) < expected_signals and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.ticked.disconnect()
    except Exception:
        errors.append(f"client {client}: {traceback.format_exc()}")
        barrier.abort()  # do not leave the others waiting for us
    finally:
        context.term()
    with lock:
        signals = list(received)
    return {"client": client, "errors": errors, "signals": signals, "elapsed": elapsed}


def _one_call(proxy: SoakProxy, client: int, seq: int, buffer: np.ndarray) -> str:
    """Make call ``seq``; return what was wrong with its reply, or ""."""
    kind = kind_of(seq)
    if kind == "echo":
        payload = _payload(client, seq)
        got = proxy.echo(client, seq, payload)
        if not (isinstance(got, list) and got[:2] == [client, seq]):
            return f"echo answered {got!r}"
        return "" if _same_payload(got[2], payload) else f"echo payload {got[2]!r}"
    if kind == "buffer":
        buffer[:16] = np.frombuffer(np.array([client, seq], "<i8").tobytes(), np.uint8)
        got = proxy.echo_buffer(client, seq, buffer)
        if not got:
            return f"echo_buffer failed: {got!r}"
        data, info = got
        if info != {"client": client, "seq": seq}:
            return f"echo_buffer info {info!r}"
        if not np.array_equal(np.asarray(data).reshape(-1).view(np.uint8), buffer):
            return "echo_buffer returned other bytes"
        return ""
    if kind == "property":
        proxy.value = [client, seq]  # raises RemoteError on failure
        return ""
    got = proxy.tick(client, seq)
    return "" if got == [client, seq] else f"tick answered {got!r}"


def client_process(
    url: str,
    client: int,
    calls: int,
    warmup: int,
    barrier: Any,
    expected_signals: int,
    results: Any,
) -> None:
    """Client process: :func:`run_client`, its report put on ``results``."""
    results.put(run_client(url, client, calls, warmup, barrier, expected_signals))
