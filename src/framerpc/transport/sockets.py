"""ZeroMQ sockets for framerpc: creation with tuned options and CURVE,
binding (a free tcp port, private ipc:// files) and closing."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import weakref

import zmq

from .curve import apply_client, apply_server
from .options import DEFAULT_OPTIONS, SocketOptions
from .urls import parse_url

_log = logging.getLogger(__name__)

__all__ = ["make_socket", "bind", "bind_ipc_private", "close_quietly"]


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
    zmq.ZMQError
        libzmq refused an option (EINVAL: a negative ``hwm``, say) or the
        context is being terminated; the socket is closed.
    """
    _check_heartbeat(options)
    sock = context.socket(kind)
    try:
        _configure(sock, kind, options, server)
    except BaseException:
        # an option libzmq refuses (EINVAL) or a context being terminated
        # (ETERM): a socket left open would make term() wait for ever
        sock.close(linger=0)
        close_quietly(sock)  # and its CURVE lease, if it got one
        raise
    return sock


def _configure(
    sock: zmq.Socket, kind: int, options: SocketOptions, server: bool
) -> None:
    """Set ``make_socket``'s options on ``sock``."""
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
        if kind == zmq.SUB:
            # A SUB whose queue is full stops reading, so it cannot see the
            # PONGs: its timeout would drop a healthy link, and the reconnect
            # then aborts the process in libzmq (zeromq/libzmq#3596, #3937).
            # It still PINGs, so the publisher keeps it; the proxy's request
            # socket notices a dead server (tests/test_stalled_listener.py).
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 0)
    if server:
        sock.setsockopt(zmq.MAXMSGSIZE, options.max_message_size)
    if options.security is not None:
        if server:
            lease = apply_server(sock, options.security)
            if lease is not None:
                _leases[sock] = lease
        else:
            apply_client(sock, options.security)
    if kind == zmq.DEALER:
        # Queue requests only on completed connections: a call to a server
        # that is down times out instead of being delivered much later.
        sock.setsockopt(zmq.IMMEDIATE, 1)


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
