"""ZeroMQ sockets for framerpc: creation, tuned options, URLs, endpoints,
and the message I/O engine: compiled ``framerpc._zmqio`` or its pure twin
``framerpc._zmqio_py`` (``send_frames``, ``recv_frames``, the client's
``Channel`` and the server's ``Responder``).
"""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass

import zmq

from . import framing, security
from ._zmqio_py import BUFFER_TYPES

_log = logging.getLogger(__name__)

__all__ = [
    "SocketOptions",
    "DEFAULT_OPTIONS",
    "parse_url",
    "make_socket",
    "bind",
    "derive_endpoint",
    "connect_url_for",
    "close_quietly",
    "send_frames",
    "recv_frames",
    "release_returned_buffers",
    "Channel",
    "Responder",
    "BUFFER_TYPES",
    "IO_IMPLEMENTATION",
]

_URL_RE = re.compile(r"^(tcp|ipc|inproc)://(.+)$")
_TCP_PORT_RE = re.compile(r"^(.*):(\d+|\*)$")


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """Tuned socket options, in the units ZeroMQ uses.

    Attributes
    ----------
    linger_ms : int
        How long close() may wait to flush (ms): long enough to deliver a
        last reply, short enough that close never hangs on a dead peer.
    hwm : int
        Send and receive high-water marks (messages). Frames can be tens
        of MB, so the default 1000 could hold gigabytes in a queue.
    reconnect_ivl_ms, reconnect_ivl_max_ms : int
        First and largest reconnect interval (ms): devices on flaky Wi-Fi
        come back fast without a reconnect storm.
    tcp_keepalive_idle_s, tcp_keepalive_intvl_s : int
        TCP keepalive (s), so that a peer that vanished is noticed and a
        NAT or Wi-Fi access point does not silently drop an idle link.
    max_message_size : int
        Largest inbound frame the server accepts (bytes, -1 for no
        limit); a bad peer cannot make it allocate beyond this.
    max_header_size : int
        Largest request header (frame 0, msgpack or the older protocol's
        JSON) a server reads, in bytes; a larger one is refused unread.
        Large values travel in frames of their own, so headers are small;
        16 MiB leaves room for long strings and lists.
    max_objects : int
        Most objects (values, keys, containers; an array or buffer
        reference counts 16) in a request header of more than 64 KiB.
        Decoding builds one Python object per item, 70 bytes for an
        empty list of 1 byte: the default bounds the worst header to
        about 0.2 s of server CPU and 70 MB (measured by
        benchmarks/bench_hostile.py; 4 MiB of empty lists cost 3.5 s and
        590 MB without it).
    max_depth : int
        Deepest nesting of containers in a request header of more than
        64 KiB (the header map is at depth 1): 100 leaves a received value
        nested that deep well inside Python's recursion limit when the
        server walks or echoes it.
    security : Security or None
        Opt-in CURVE (see :mod:`framerpc.security`): bound sockets (server,
        signals, registry) use it as server, connecting sockets as client
        of ``security.server_public_key``. None: plain sockets.
    """

    linger_ms: int = 200
    hwm: int = 100
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    tcp_keepalive_idle_s: int = 60
    tcp_keepalive_intvl_s: int = 10
    max_message_size: int = 1 << 30
    security: security.Security | None = None
    max_header_size: int = framing.MAX_HEADER_SIZE
    max_objects: int = framing.MAX_OBJECTS
    max_depth: int = framing.MAX_DEPTH


DEFAULT_OPTIONS = SocketOptions()


def parse_url(url: str) -> tuple[str, str, int | None]:
    """Split a ZeroMQ URL into ``(transport, address, port)``.

    ``port`` is None for ipc://, inproc:// and a tcp:// URL without port.

    Raises
    ------
    ValueError
        The URL is not tcp://, ipc:// or inproc://.
    """
    match = _URL_RE.match(url)
    if match is None:
        raise ValueError(f"unsupported URL {url!r}: use tcp://, ipc:// or inproc://")
    transport, rest = match.groups()
    if transport != "tcp":
        return transport, rest, None
    port_match = _TCP_PORT_RE.match(rest)
    if port_match is None or port_match.group(2) == "*":
        host = port_match.group(1) if port_match else rest
        return transport, host, None
    return transport, port_match.group(1), int(port_match.group(2))


def make_socket(
    context: zmq.Context,
    kind: int,
    options: SocketOptions = DEFAULT_OPTIONS,
    *,
    server: bool = False,
) -> zmq.Socket:
    """Create a socket of type ``kind`` with framerpc's tuned options."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.SNDHWM, options.hwm)
    sock.setsockopt(zmq.RCVHWM, options.hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, options.tcp_keepalive_idle_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, options.tcp_keepalive_intvl_s)
    if server:
        sock.setsockopt(zmq.MAXMSGSIZE, options.max_message_size)
    if options.security is not None:
        try:
            if server:
                lease = security.apply_server(sock, options.security)
                if lease is not None:
                    _leases[sock] = lease
            else:
                security.apply_client(sock, options.security)
        except BaseException:
            sock.close(linger=0)
            raise
    if kind == zmq.DEALER:
        # Queue requests only on completed connections: a call to a server
        # that is down times out instead of being delivered much later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def bind(sock: zmq.Socket, url: str) -> tuple[str, int | None]:
    """Bind ``sock`` at ``url``; a tcp:// URL without port gets a free one.

    Returns
    -------
    tuple
        The bound endpoint and its TCP port (None for ipc:// and inproc://).
    """
    transport, address, port = parse_url(url)
    if transport == "tcp" and port is None:
        # The OS picks a free port: no retry loop, no collision.
        sock.bind(f"tcp://{address}:*")
    else:
        sock.bind(url)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return endpoint, parse_url(endpoint)[2]


def derive_endpoint(url: str, suffix: str) -> str:
    """Endpoint for a companion socket of ``url`` (the signal PUB socket).

    tcp:// keeps the host and takes a free port; ipc:// and inproc:// add
    ``suffix`` to the path or name.
    """
    transport, address, _ = parse_url(url)
    if transport == "tcp":
        return f"tcp://{address}:*"
    return f"{transport}://{address}{suffix}"


def connect_url_for(server_url: str, endpoint: str) -> str:
    """URL a client should connect to for a server-side ``endpoint``.

    A tcp endpoint bound on a wildcard host (``0.0.0.0``, ``*``) is not
    reachable as such: keep the host the client used to reach the server.
    """
    transport, host, _ = parse_url(server_url)
    end_transport, _, end_port = parse_url(endpoint)
    if transport == "tcp" and end_transport == "tcp" and end_port is not None:
        return f"tcp://{host}:{end_port}"
    return endpoint


# Authenticator leases of secured bound sockets, released when they close.
_leases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def close_quietly(sock: zmq.Socket | None) -> None:
    """Close ``sock`` if it is open (and its CURVE lease); never raises."""
    if sock is None:
        return
    if not sock.closed:
        try:
            sock.close()
        except zmq.ZMQError:
            pass
    lease = _leases.pop(sock, None)
    if lease is not None:
        lease.close()


#: Which message I/O is live: "compiled" (framerpc._zmqio, libzmq called
#: directly) or "pure" (framerpc._zmqio_py). Follows framing.IMPLEMENTATION.
IO_IMPLEMENTATION = "pure"
if framing.IMPLEMENTATION == "compiled":
    try:
        from ._zmqio import (  # type: ignore[import-not-found]
            Channel,
            Responder,
            recv_frames,
            release_returned_buffers,
            send_frames,
        )

        IO_IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled message I/O unavailable, using pure Python: %s", exc)
if IO_IMPLEMENTATION == "pure":
    from ._zmqio_py import (  # type: ignore[assignment]
        Channel,
        Responder,
        recv_frames,
        release_returned_buffers,
        send_frames,
    )
