"""ZeroMQ sockets for framerpc: creation, tuned options, URLs, endpoints,
and the message I/O engine: compiled ``framerpc._zmqio`` or its pure twin
``framerpc._zmqio_py`` (``send_frames``, ``recv_frames``, the client's
``Channel`` and the server's ``Responder``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
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
    "check_url",
    "make_socket",
    "bind",
    "bind_ipc_private",
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

_SCHEMES = ("tcp", "ipc", "inproc")
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
    heartbeat_ivl_ms, heartbeat_timeout_ms, heartbeat_ttl_ms : int
        ZeroMQ heartbeats (ZMTP PING/PONG, libzmq >= 4.2) on every tcp://
        and ipc:// connection, client and server side. Every
        ``heartbeat_ivl_ms`` a socket sends a PING; when nothing at all
        arrives within ``heartbeat_timeout_ms`` after it, libzmq closes the
        connection (and reconnects, for a connecting socket).
        ``heartbeat_ttl_ms`` travels in the PING and tells the peer to close
        the connection after that long without traffic from us (a multiple
        of 100 ms, at least 100). PINGs are answered by libzmq's I/O thread:
        a server busy in a long method stays alive. So a peer that vanished
        (host off, cable out, process frozen) is noticed within about
        ``heartbeat_ivl_ms + heartbeat_timeout_ms`` (4 s by default); a
        killed process is noticed at once (its kernel closes the
        connection). A call in flight then raises
        ``PeerLostError``, whatever its timeout.
        ``heartbeat_ivl_ms=0`` turns heartbeats off (for peers older than
        libzmq 4.2): a frozen peer then goes unnoticed, and a call without
        timeout waits for a server that is down until it is back.
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
        Opt-in CURVE (see ``framerpc.security``): bound sockets (server,
        signals, registry) use it as server, connecting sockets as client
        of ``security.server_public_key``. None: plain sockets.
    ipc_mode : int
        Permission bits of the ``ipc://`` socket files a server binds
        (default ``0o600``: only the owner may connect). Widen it to share a
        device with other local users, e.g. ``0o660`` for the file's group.
        The file never exists with wider bits than these (see ``bind``).
    allow_abstract_ipc : bool
        Allow binding an abstract ``ipc://@name`` (Linux). Such a name has
        no permissions: any local user may connect. Refused by default.
    reply_backlog_messages, reply_backlog_bytes : int
        How many replies, and how many bytes of them, a server keeps per
        client whose receive queue is full (a client with many calls in
        flight that is slow to read). They are sent as the client reads;
        replies beyond these bounds are dropped, logged and counted
        (``RPCServer.stats``).
    reply_backlog_total_bytes : int
        The same bound in bytes, summed over all clients.
    signal_buffer_bytes : int
        Most bytes of signal emissions the server holds for subscribers
        that have not read them yet (default 64 MiB). Emissions from
        4 KiB (less for a small buffer) are counted for all subscribers
        together; emissions that would exceed the buffer are dropped for
        everyone, logged and counted (``RPCServer.stats``), and an
        emission larger than the buffer is never sent. Smaller emissions
        are copied and not counted: a stalled subscriber holds at most
        ``signal_hwm`` of them, and part of the buffer (at most a
        quarter) is kept for them (one stalled subscriber per signal
        socket; each further one may hold up to ``signal_hwm`` x 4 KiB,
        2 MiB by default, more).
    signal_hwm : int
        Send high-water mark of the signal sockets (messages per
        subscriber, default 500). A subscriber that stops reading holds at
        most this many emissions in the server: while ``signal_hwm`` times
        the emission size stays well under ``signal_buffer_bytes`` (up to
        about 100 KB per emission with the defaults) the other subscribers
        go on receiving; with larger emissions a stalled subscriber can use
        up the buffer, and emissions are dropped (counted) for everyone
        until it reads or leaves. Memory stays bounded either way. What a
        subscriber's full queue refuses is lost for it alone, counted
        for emissions from 4 KiB (``stats["dropped_signals_for_some"]``).
        The mark is set once, before the socket is bound: libzmq can stop
        a connected subscriber's queue for good when it changes.
    """

    linger_ms: int = 200
    hwm: int = 100
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    tcp_keepalive_idle_s: int = 60
    tcp_keepalive_intvl_s: int = 10
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000
    heartbeat_ttl_ms: int = 3000
    max_message_size: int = 1 << 30
    security: security.Security | None = None
    max_header_size: int = framing.MAX_HEADER_SIZE
    max_objects: int = framing.MAX_OBJECTS
    max_depth: int = framing.MAX_DEPTH
    ipc_mode: int = 0o600
    allow_abstract_ipc: bool = False
    reply_backlog_messages: int = 10_000
    reply_backlog_bytes: int = 64 << 20
    reply_backlog_total_bytes: int = 256 << 20
    signal_buffer_bytes: int = 64 << 20
    signal_hwm: int = 500

    @property
    def dead_peer_ms(self) -> int | None:
        """How long (ms) a vanished peer may go unnoticed: a heartbeat
        interval plus its timeout; None when heartbeats are off."""
        if self.heartbeat_ivl_ms <= 0:
            return None
        return self.heartbeat_ivl_ms + self.heartbeat_timeout_ms


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


#: A tcp:// address: ``[source;]host[:port]``, host a name, IPv4, ``*`` or
#: ``[IPv6]``; port digits or ``*``. The port is checked apart.
_TCP_ADDRESS_RE = re.compile(
    r"^(?:[^\s/;]+;)?(?:\[[0-9A-Za-z:.%]+\]|[^\s/:;\[\]]+)(?::(?P<port>[^:]*))?$"
)


def check_url(url: object, *, for_bind: bool) -> str:
    """Refuse a URL ZeroMQ would reject, with a one-line message.

    Parameters
    ----------
    url : object
        What the caller was given as a URL.
    for_bind : bool
        True where the URL is bound (server, registry): ``tcp://HOST``
        without a port, ``:*`` and ``:0`` take a free port. A URL that is
        connected to needs an explicit port.

    Returns
    -------
    str
        ``url``, unchanged.

    Raises
    ------
    ValueError
        ``url`` is not a str of one of the accepted forms; the message
        names it, says what is wrong and lists the forms.
    """
    problem = _url_problem(url, for_bind)
    if problem is None:
        return url  # type: ignore[return-value]
    forms = "tcp://HOST:PORT, " + ("tcp://HOST (a free port), " if for_bind else "")
    forms += "ipc:///path or inproc://name"
    role = "bind" if for_bind else "connect"
    raise ValueError(f"bad URL {url!r} to {role} ({problem}): use {forms}")


def _url_problem(url: object, for_bind: bool) -> str | None:
    """What is wrong with ``url`` (see ``check_url``), or None."""
    if not isinstance(url, str):
        return f"got {type(url).__name__}, not str"
    match = _URL_RE.match(url)
    if match is None:
        scheme, sep, _ = url.partition("://")
        if not sep:
            return "no transport"
        if scheme in _SCHEMES:
            return "empty address"
        return f"unknown transport {scheme!r}"
    transport, rest = match.groups()
    if any(c.isspace() for c in rest):
        return "blank in the address"
    if transport != "tcp":
        return None
    address = _TCP_ADDRESS_RE.match(rest)
    if address is None:
        return "malformed host"
    port = address.group("port")
    if port is None:
        return None if for_bind else "no port"
    if port == "*":
        return None if for_bind else "port * only binds"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"port {port!r} is not a number 0-65535"
    if int(port) == 0 and not for_bind:
        return "port 0 only binds"
    return None


def make_socket(
    context: zmq.Context,
    kind: int,
    options: SocketOptions = DEFAULT_OPTIONS,
    *,
    server: bool = False,
) -> zmq.Socket:
    """Create a socket of type ``kind`` with framerpc's tuned options.

    Raises
    ------
    ValueError
        A heartbeat option is out of libzmq's range.
    """
    _check_heartbeat(options)
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.SNDHWM, options.hwm)
    sock.setsockopt(zmq.RCVHWM, options.hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, options.tcp_keepalive_idle_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, options.tcp_keepalive_intvl_s)
    if options.heartbeat_ivl_ms > 0:
        sock.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, options.heartbeat_ttl_ms)
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


def _check_heartbeat(options: SocketOptions) -> None:
    ivl, timeout, ttl = (
        options.heartbeat_ivl_ms,
        options.heartbeat_timeout_ms,
        options.heartbeat_ttl_ms,
    )
    if ivl < 0 or timeout < 0 or not 0 <= ttl <= _MAX_HEARTBEAT_TTL_MS:
        raise ValueError(
            "heartbeat options must be >= 0 ms (heartbeat_ttl_ms at most "
            f"{_MAX_HEARTBEAT_TTL_MS}), got heartbeat_ivl_ms={ivl}, "
            f"heartbeat_timeout_ms={timeout}, heartbeat_ttl_ms={ttl}"
        )


#: libzmq's largest ZMQ_HEARTBEAT_TTL: 2**16 - 1 deciseconds.
_MAX_HEARTBEAT_TTL_MS = 6553599


def bind(
    sock: zmq.Socket, url: str, options: SocketOptions = DEFAULT_OPTIONS
) -> tuple[str, int | None]:
    """Bind ``sock`` at ``url``; a tcp:// URL without port gets a free one.

    An ``ipc://`` path is bound by ``bind_ipc_private`` (file mode
    ``options.ipc_mode``, abstract names refused unless
    ``options.allow_abstract_ipc``).

    Returns
    -------
    tuple
        The bound endpoint and its TCP port (None for ipc:// and inproc://).

    Raises
    ------
    ValueError
        An unsupported URL, or an abstract ipc:// name not allowed.
    """
    transport, address, port = parse_url(url)
    if transport == "tcp" and port is None:
        # The OS picks a free port: no retry loop, no collision.
        sock.bind(f"tcp://{address}:*")
    elif transport == "ipc":
        return bind_ipc_private(sock, url, options), None
    else:
        sock.bind(url)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return endpoint, parse_url(endpoint)[2]


def bind_ipc_private(
    sock: zmq.Socket, url: str, options: SocketOptions = DEFAULT_OPTIONS
) -> str:
    """Bind ``sock`` at the ``ipc://`` ``url`` with file mode ``options.ipc_mode``.

    libzmq creates the socket file at bind with ``0777 & ~umask``: anyone
    who connects before a later chmod stays connected. So the file is
    bound in a fresh ``0700`` folder next to the target (no other user can
    reach it there), given its mode, then renamed onto the target path
    (atomic; a stale file of an earlier run is replaced as libzmq would).
    The umask is not touched: it is process-wide. When the temporary path
    would be too long for a socket address, or the folder cannot be
    created, the file is bound in place and chmod-ed at once (a window of
    microseconds, logged at debug level). ``close_quietly`` removes
    the file; libzmq only knows the temporary name, so ``LAST_ENDPOINT``
    shows it and ``unbind(url)`` does not apply (close the socket).

    Returns
    -------
    str
        The bound endpoint (``url`` itself for a path).

    Raises
    ------
    ValueError
        ``url`` is not ipc://, or an abstract name (``ipc://@name``) and
        ``options.allow_abstract_ipc`` is false.
    """
    transport, path, _ = parse_url(url)
    if transport != "ipc":
        raise ValueError(f"not an ipc:// URL: {url!r}")
    mode = options.ipc_mode
    if not 0 <= mode <= 0o777:
        raise ValueError(f"ipc_mode must be permission bits (0..0o777), got {mode:o}")
    if path.startswith("@"):
        if not options.allow_abstract_ipc:
            raise ValueError(
                f"abstract ipc:// name {url!r} refused: any local user could "
                "connect to it; use a file path, or set "
                "SocketOptions(allow_abstract_ipc=True)"
            )
        sock.bind(url)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if path == "*":  # libzmq's own private temporary folder
        sock.bind(url)
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        os.chmod(parse_url(endpoint)[1], mode)
        return endpoint
    target = os.path.abspath(path)
    try:
        folder = tempfile.mkdtemp(prefix=".f", dir=os.path.dirname(target))  # 0700
    except OSError as exc:  # no such folder, or not writable: libzmq says so
        _log.debug("cannot stage %s (%s): binding in place", target, exc)
        sock.bind(url)
        os.chmod(target, mode)
        _ipc_files[sock] = (target, os.stat(target).st_ino)
        return url
    staged = os.path.join(folder, "s")
    try:
        if len(os.fsencode(staged)) >= _SUN_PATH_MAX:
            _log.debug("ipc path %s too long to stage: chmod after bind", staged)
            sock.bind(url)
            os.chmod(target, mode)
        else:
            sock.bind(f"ipc://{staged}")
            try:
                os.chmod(staged, mode)
                os.rename(staged, target)
            except BaseException:
                sock.unbind(f"ipc://{staged}")
                raise
    finally:
        try:
            os.rmdir(folder)
        except OSError:  # the staged file is still there (a failed rename)
            _log.warning("could not remove the temporary folder %s", folder)
    _ipc_files[sock] = (target, os.stat(target).st_ino)
    return url


#: Longest socket path (sun_path of sockaddr_un on Linux, with its NUL).
_SUN_PATH_MAX = 108


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
# ipc:// files bound by bind_ipc_private: (path, inode), removed at close.
_ipc_files: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    bound = _ipc_files.pop(sock, None)
    if bound is not None:
        _remove_ipc_file(*bound)


def _remove_ipc_file(path: str, inode: int) -> None:
    """Remove the socket file ``path`` if it is still ours (same inode)."""
    try:
        info = os.lstat(path)
        if info.st_ino == inode and stat.S_ISSOCK(info.st_mode):
            os.unlink(path)
    except OSError:
        pass


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
