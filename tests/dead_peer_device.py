"""The device of tests/test_dead_peers.py, served by a child process.

``python dead_peer_device.py URL IVL_MS TIMEOUT_MS`` serves a
:class:`ProbeServer` at URL with those heartbeat options (0 0: the
defaults), prints its bound URL on one line, and serves until killed.
"""

from __future__ import annotations

import sys
import threading
from abc import ABC, abstractmethod
from typing import Any

import zmq

from framerpc.client import RPCClient
from framerpc.server import RPCServer
from framerpc.transport import DEFAULT_OPTIONS, SocketOptions

#: How long ``hang`` blocks (s): longer than any test waits for it.
HANG_S = 120.0


class Probe(ABC):
    """What the tests call."""

    @abstractmethod
    def echo(self, value: Any) -> Any:
        """Return ``value`` (1 s timeout)."""

    @abstractmethod
    def echo_patiently(self, value: Any) -> Any:
        """Return ``value`` (10 s timeout)."""

    @abstractmethod
    def hang(self) -> None:
        """Block for :data:`HANG_S` (no timeout): a call that stays in flight."""


class ProbeServer(Probe, RPCServer):
    @RPCServer.register_method_json(timeout=1000)
    def echo(self, value: Any) -> Any:
        return value

    @RPCServer.register_method_json(timeout=10000)
    def echo_patiently(self, value: Any) -> Any:
        return value

    @RPCServer.register_method_json(timeout=None)
    def hang(self) -> None:
        print("hanging", flush=True)  # tells the test the call is in flight
        threading.Event().wait(HANG_S)


@RPCClient.register_interface(Probe)
class ProbeProxy(Probe, RPCClient):
    pass


def heartbeat_options(ivl_ms: int, timeout_ms: int) -> SocketOptions:
    """Options with a fast heartbeat (0, 0: the defaults)."""
    if ivl_ms == 0:
        return DEFAULT_OPTIONS
    return SocketOptions(
        heartbeat_ivl_ms=ivl_ms,
        heartbeat_timeout_ms=timeout_ms,
        heartbeat_ttl_ms=max(100, timeout_ms),
    )


def main(url: str, ivl_ms: int, timeout_ms: int) -> None:
    ctx = zmq.Context()
    server = ProbeServer(ctx, url, options=heartbeat_options(ivl_ms, timeout_ms))
    print(server.url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
