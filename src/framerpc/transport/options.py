"""Socket options: ``SocketOptions`` (tuned values, in ZeroMQ's units) and
``DEFAULT_OPTIONS``."""

from __future__ import annotations

from dataclasses import dataclass

from ..limits import MAX_DEPTH, MAX_HEADER_SIZE, MAX_OBJECTS
from .keys import Security

__all__ = ["SocketOptions", "DEFAULT_OPTIONS"]


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
        ``PeerLostError``, whatever its timeout. A client's signal (SUB)
        socket sends PINGs but never times out: it cannot read while its
        queue is full (a slow listener), so a timeout would drop a healthy
        link (and made libzmq abort the process on the reconnect).
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
        Opt-in CURVE (see ``framerpc.transport.keys``): bound sockets (server,
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
        Most bytes of signal emissions the server holds for one subscriber
        that has not read them yet (default 64 MiB), on each signal socket
        (native, and JSON once an older client asked): each emission is
        sent subscriber by subscriber (``framerpc.server.fanout``). An
        emission that would exceed a subscriber's bound is not sent to it,
        logged (INFO) at most once a second and counted
        (``stats["dropped_signals_for_some"]``); the other subscribers get
        it. An emission larger than the bound is sent to nobody
        (``stats["dropped_signals_for_all"]``). Emissions under 4 KiB (less
        for a small bound) are copied and not counted: part of the bound,
        ``signal_hwm`` of them (at most an eighth), is kept for them.
    signal_hwm : int
        Send high-water mark of the signal sockets (messages per
        subscriber, default 500): a subscriber that stops reading holds at
        most this many emissions, and at most ``signal_buffer_bytes`` of
        them, in the server. What its full queue refuses is lost for it
        alone and counted (``stats["dropped_signals_for_some"]``). The
        mark is set once, before the socket is bound: libzmq can stop a
        connected subscriber's queue for good when it changes.
    shm : bool
        Same-host shared memory (Linux ``/dev/shm``; see the docs'
        shared-memory section): a client and a server of one host and
        user find out at the handshake, and buffer replies of
        ``shm_threshold`` bytes or more then travel as references into a
        segment of the server instead of through the socket. False on
        either side: every frame goes through the socket.
    shm_threshold : int
        Smallest array (bytes) a server sends through shared memory
        (default 256 KiB: where a plain array's one copy into a segment
        became cheaper than the socket over ``ipc://``, compiled engine,
        measured by ``benchmarks/bench_shm.py --sweep``; smaller ones are
        cheaper over the socket).
    shm_max_bytes : int
        Most bytes of segments a server creates to copy plain arrays into
        (default 256 MiB, reserved in ``/dev/shm`` as they are created);
        ``FramePool`` frames in shared memory do not count (they are the
        pool's). Beyond it replies go over the socket (counted).
    shm_max_slots : int
        Most replies one client may hold in shared memory before it
        releases them (default 16); beyond it its replies go over the
        socket (counted).
    shm_client_share : float
        Largest part of ``shm_max_bytes`` one client may hold in copies at
        a time (default 0.25: 64 MiB, two 24.9 MB frames), so that a
        client keeping what it fetched leaves shared memory to the others;
        a client holding no copy may always take one, however large.
        Beyond it its replies go over the socket (counted). The same share
        bounds each subscriber in the signals' arena. 1 lets one client
        take the whole arena (a single consumer that keeps many frames).
    shm_copy_thread : bool
        Whether the compiled engine may split the one copy of a plain
        array of 3.5 MiB or more into shared memory with one worker thread
        of the process (default True: a 24.9 MB copy takes about a quarter
        less time for about a fifth more CPU). The thread is started by the
        first server that uses it, in a process allowed on 2 or more CPUs,
        kept off the CPU of the thread it helps (its own affinity, within
        the process's), and joined when the last such server closes.
        False: this server's copies stay on its serving thread.
    lane : bool
        Same-host lane (Linux; with ``shm`` on both sides): a sync
        client's method calls go over a Unix ``SOCK_SEQPACKET`` socket of
        the server, offered at the shared-memory handshake, instead of its
        ZeroMQ connection (each libzmq message wakes two I/O threads; a
        packet wakes only the reader). Messages over 256 KiB still go over
        ZeroMQ. False on either side: every call goes over ZeroMQ.
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
    security: Security | None = None
    max_header_size: int = MAX_HEADER_SIZE
    max_objects: int = MAX_OBJECTS
    max_depth: int = MAX_DEPTH
    ipc_mode: int = 0o600
    allow_abstract_ipc: bool = False
    reply_backlog_messages: int = 10_000
    reply_backlog_bytes: int = 64 << 20
    reply_backlog_total_bytes: int = 256 << 20
    signal_buffer_bytes: int = 64 << 20
    signal_hwm: int = 500
    shm: bool = True
    shm_threshold: int = 256 << 10
    shm_max_bytes: int = 256 << 20
    shm_max_slots: int = 16
    shm_client_share: float = 0.25
    shm_copy_thread: bool = True
    lane: bool = True

    @property
    def dead_peer_ms(self) -> int | None:
        """How long (ms) a vanished peer may go unnoticed: a heartbeat
        interval plus its timeout; None when heartbeats are off."""
        if self.heartbeat_ivl_ms <= 0:
            return None
        return self.heartbeat_ivl_ms + self.heartbeat_timeout_ms


DEFAULT_OPTIONS = SocketOptions()
