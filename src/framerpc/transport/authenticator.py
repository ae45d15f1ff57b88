"""The ZAP handler that checks CURVE client keys, shared per context.

ZeroMQ asks one ZAP handler per context whether a client key is allowed.
An ``Authenticator`` lease starts that handler (a
``zmq.auth.thread.ThreadAuthenticator``) for a context on first use and
shares it between the secured sockets of the context (each allowed
folder is its own ZAP domain); the last lease of a context stops the
handler's thread. ``ClientKeys`` keeps it running only so that libzmq
reports client keys; ``stop_handler`` stops it for ``Context.destroy()``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from .keys import _require_curve

__all__ = ["Authenticator", "ClientKeys", "stop_handler"]

_log = logging.getLogger(__name__)

#: Prefix of the ZAP domains framerpc configures (the rest hashes the folder).
_DOMAIN_PREFIX = "framerpc-"
#: Where libzmq sends ZAP requests; one handler per context binds it.
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class _SharedAuthenticator(ThreadAuthenticator):
    """A ZAP handler in which sockets without a ZAP domain keep libzmq's
    behaviour without a handler (any CURVE client key is accepted), so one
    context can hold authenticated and encryption-only servers."""

    async def _authenticate_curve(
        self, domain: str, client_key: bytes
    ) -> tuple[bool, bytes]:
        if not domain:
            return True, b"OK"
        return await super()._authenticate_curve(domain, client_key)

    def stop(self) -> None:
        """Stop the thread, then unbind the inproc endpoints before closing.

        ``close()`` frees an inproc name only later, in ZeroMQ's I/O thread:
        without the unbind, the next handler of this context (a server
        restarted at once) could not bind the ZAP endpoint.
        """
        if self.pipe is not None:
            self.pipe.send(b"TERMINATE")
            if self.is_alive():
                self.thread.join()
            self.thread = None  # type: ignore[assignment]
            _unbind_quietly(self.pipe, self.pipe_endpoint)
            self.pipe.close()
            self.pipe = None  # type: ignore[assignment]
        if self.zap_socket is not None:
            _unbind_quietly(self.zap_socket, _ZAP_ENDPOINT)
        super(ThreadAuthenticator, self).stop()  # closes the ZAP socket


def _unbind_quietly(socket: zmq.Socket, endpoint: str) -> None:
    try:
        socket.unbind(endpoint)
    except zmq.ZMQError:
        pass


class _ContextEntry:
    """The handler of one context, with reference counts per domain."""

    def __init__(self, context: zmq.Context) -> None:
        self.handler = _SharedAuthenticator(
            context, log=logging.getLogger(__name__ + ".zap")
        )
        try:
            self.handler.start()
        except BaseException:
            self.handler.stop()  # closes the ZAP socket a failed bind left open
            raise
        self.leases = 0
        self.domains: dict[str, int] = {}


# libzmq context address -> entry; the leases keep the context alive
_entries: dict[int, _ContextEntry] = {}
_entries_lock = threading.Lock()


def _take_lease(context: zmq.Context) -> _ContextEntry:
    """A lease on ``context``'s entry, made (its handler started) by the
    first one. Call with ``_entries_lock`` held."""
    # One handler per libzmq context: framerpc's servers use a shadow of the
    # context that a registry or the user may use directly (same key).
    entry = _entries.get(context.underlying)
    if entry is None:
        entry = _entries[context.underlying] = _ContextEntry(context)
    entry.leases += 1
    return entry


def _drop_lease(context: zmq.Context, entry: _ContextEntry) -> None:
    """Give a lease back; the last one stops the handler. Call with
    ``_entries_lock`` held."""
    entry.leases -= 1
    if entry.leases == 0:
        del _entries[context.underlying]
        entry.handler.stop()


def _domain_for(folder: Path) -> str:
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:24]
    return _DOMAIN_PREFIX + digest


class Authenticator:
    """A lease on the ZAP handler of a context, for one allowed-clients folder.

    The first lease of a context starts the handler thread; ``close``
    of the last lease stops it. Usually made by ``apply_server``, whose
    caller owns it; usable as a context manager.

    Parameters
    ----------
    context : zmq.Context
        The context of the sockets to protect.
    allowed_clients_dir : path-like
        Folder of the allowed clients' public key files (``*.key``). The
        keys are read now; call ``reload`` after changing the folder.

    Attributes
    ----------
    domain : str
        The ZAP domain of the folder; secured sockets carry it.
    allowed_clients_dir : Path
        The folder, resolved.

    Raises
    ------
    ValueError
        The folder does not exist.
    RuntimeError
        libzmq lacks CURVE support.
    zmq.ZMQError
        Another ZAP handler already serves this context.
    """

    def __init__(
        self, context: zmq.Context, allowed_clients_dir: str | os.PathLike
    ) -> None:
        _require_curve()
        folder = Path(allowed_clients_dir).resolve()
        if not folder.is_dir():
            raise ValueError(f"allowed_clients_dir {folder} is not a folder")
        self.context = context
        self.allowed_clients_dir = folder
        self.domain = _domain_for(folder)
        self._closed = False
        with _entries_lock:
            entry = _take_lease(context)
            entry.domains[self.domain] = entry.domains.get(self.domain, 0) + 1
            entry.handler.configure_curve(domain=self.domain, location=str(folder))
        self._entry = entry
        _log.debug("ZAP domain %s allows the keys in %s", self.domain, folder)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` ask this lease's domain (before bind or connect)."""
        socket.setsockopt_string(zmq.ZAP_DOMAIN, self.domain)

    def reload(self) -> None:
        """Read the allowed keys of the folder again (keys added or removed)."""
        if self._closed:
            raise RuntimeError("authenticator lease is closed")
        with _entries_lock:
            self._entry.handler.configure_curve(
                domain=self.domain, location=str(self.allowed_clients_dir)
            )

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Release the lease; the last one of a context stops the thread.

        Idempotent. Call it after closing the sockets it protects and before
        terminating the context.
        """
        with _entries_lock:
            if self._closed:
                return
            self._closed = True
            entry = self._entry
            entry.domains[self.domain] -= 1
            if entry.domains[self.domain] == 0:
                del entry.domains[self.domain]
                entry.handler.certs.pop(self.domain, None)
            _drop_lease(self.context, entry)

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Authenticator {self.allowed_clients_dir} ({state})>"


def stop_handler(context: zmq.Context) -> None:
    """Stop the ZAP handler of ``context``'s libzmq context now, if any.

    For ``Context.destroy()``: pyzmq's handler thread does not stop when the
    context is terminated, so ``term()`` would wait for its sockets for
    ever. Leases stay valid; closing them later does nothing more.
    """
    with _entries_lock:
        entry = _entries.get(context.underlying)
        if entry is not None:
            entry.handler.stop()


class ClientKeys:
    """A lease that makes libzmq report the CURVE key of every client.

    libzmq tells who sent a message (the ``User-Id`` read by
    ``peer_key``) only when a ZAP handler runs in the context. An
    ``Authenticator`` starts one; this lease keeps it running for
    secured sockets without an allowed-clients folder, which still accept
    any client key (the handler allows sockets without a ZAP domain).
    Close it after the sockets that need it, before terminating the context.

    Parameters
    ----------
    context : zmq.Context
        The context of the secured sockets.

    Raises
    ------
    RuntimeError
        libzmq lacks CURVE support.
    zmq.ZMQError
        Another ZAP handler already serves this context.
    """

    def __init__(self, context: zmq.Context) -> None:
        _require_curve()
        self.context = context
        self._closed = False
        with _entries_lock:
            # shared with the servers' leases: one handler per libzmq context
            self._entry = _take_lease(context)

    def close(self) -> None:
        """Release the lease (idempotent); the last one stops the handler."""
        with _entries_lock:
            if self._closed:
                return
            self._closed = True
            _drop_lease(self.context, self._entry)
