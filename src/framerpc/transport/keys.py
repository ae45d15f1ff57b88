"""Opt-in CURVE encryption and client authentication, through ``zmq.auth``.

Without a ``Security`` object nothing here runs and sockets behave as
before. With one:

* a server socket (ROUTER, and the signal PUB) gets the server's key pair
  through ``apply_server``; when the settings name an
  ``allowed_clients_dir``, only clients whose public key file (``*.key``)
  is in that folder complete the handshake, the others get no answer;
* a client socket (DEALER, SUB, the registry helpers' DEALER) gets its own
  key pair and the server's public key through ``apply_client``.

Keys are the Z85 text of ``zmq.curve_keypair()``, stored in the files
``zmq.auth.create_certificates`` writes: ``NAME.key`` (public, hand it
out) and ``NAME.key_secret`` (keep it private). ``generate_keys`` and
``framerpc keys DIR`` write such a pair.

ZeroMQ asks one ZAP handler per context whether a client key is allowed.
``apply_server`` starts that handler (a
``zmq.auth.thread.ThreadAuthenticator``) for the socket's context on first
use, shares it between the secured sockets of the context (each allowed
folder is its own ZAP domain, so servers with different folders can share a
context), and returns an ``Authenticator`` lease: the socket's owner
closes it when it closes the socket, and the last lease of a context stops
the handler's thread. Close every lease before terminating the context.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = [
    "Authenticator",
    "ClientKeys",
    "Security",
    "admin_keys",
    "apply_client",
    "apply_server",
    "curve_available",
    "generate_keys",
    "load_public_key",
    "peer_key",
]

_log = logging.getLogger(__name__)

#: Length of a CURVE key in Z85 text (32 bytes of key).
_Z85_KEY_LEN = 40
#: Prefix of the ZAP domains framerpc configures (the rest hashes the folder).
_DOMAIN_PREFIX = "framerpc-"
#: Where libzmq sends ZAP requests; one handler per context binds it.
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def curve_available() -> bool:
    """Whether the libzmq in use was built with CURVE support."""
    return bool(zmq.has("curve"))


def _require_curve() -> None:
    if not curve_available():
        raise RuntimeError(
            "this libzmq was built without CURVE support: encryption is unavailable"
        )


def _key(value: str | bytes, what: str) -> bytes:
    """``value`` as Z85 key bytes; ValueError naming ``what`` when it is not one."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if not isinstance(raw, bytes) or len(raw) != _Z85_KEY_LEN:
        raise ValueError(f"{what} must be a {_Z85_KEY_LEN}-character Z85 CURVE key")
    try:
        z85.decode(raw)
    except (ValueError, KeyError, IndexError, OverflowError) as exc:
        raise ValueError(f"{what} is not valid Z85 text") from exc
    return raw


@dataclass(frozen=True, slots=True, repr=False)
class Security:
    """CURVE settings of one endpoint: its key pair and whom it trusts.

    Parameters
    ----------
    public_key, secret_key : bytes or str
        This endpoint's key pair (Z85 text, 40 characters each).
    server_public_key : bytes or str, optional
        Client side: the public key of the server to connect to (it may
        also be passed to ``apply_client``).
    allowed_clients_dir : path-like, optional
        Server side: folder of the public key files (``*.key``) of the
        clients allowed in. Without it, a secured server encrypts but
        accepts any client key.
    admin_keys_dir : path-like, optional
        Server side: folder of the public key files (``*.key``) of the
        administrators, the only clients whose STOP_SERVER request an
        ``RPCServer`` honours (read at each request). Needs
        ``allowed_clients_dir`` (the client key is known through the
        handler that checks it); list administrators in both. Without it,
        a secured server refuses every remote STOP_SERVER.

    Raises
    ------
    ValueError
        A key is not 40 characters of Z85, the secret key does not belong
        to the public key, ``allowed_clients_dir`` or ``admin_keys_dir``
        is not a folder, or ``admin_keys_dir`` comes without
        ``allowed_clients_dir``.
    """

    public_key: bytes
    secret_key: bytes
    server_public_key: bytes | None = None
    allowed_clients_dir: Path | None = None
    admin_keys_dir: Path | None = None

    def __post_init__(self) -> None:
        # Normalise in place (frozen): str keys to bytes, the folder to a Path.
        set_ = object.__setattr__
        set_(self, "public_key", _key(self.public_key, "public_key"))
        set_(self, "secret_key", _key(self.secret_key, "secret_key"))
        if self.server_public_key is not None:
            set_(
                self,
                "server_public_key",
                _key(self.server_public_key, "server_public_key"),
            )
        if self.allowed_clients_dir is not None:
            folder = Path(self.allowed_clients_dir).resolve()
            if not folder.is_dir():
                raise ValueError(f"allowed_clients_dir {folder} is not a folder")
            set_(self, "allowed_clients_dir", folder)
        if self.admin_keys_dir is not None:
            admins = Path(self.admin_keys_dir).resolve()
            if not admins.is_dir():
                raise ValueError(f"admin_keys_dir {admins} is not a folder")
            if self.allowed_clients_dir is None:
                raise ValueError(
                    "admin_keys_dir needs allowed_clients_dir: a client's key "
                    "is known only where client keys are checked"
                )
            set_(self, "admin_keys_dir", admins)
        if curve_available() and zmq.curve_public(self.secret_key) != self.public_key:
            raise ValueError("secret_key does not belong to public_key")

    @classmethod
    def from_files(
        cls,
        secret_file: str | os.PathLike,
        *,
        server_public_file: str | os.PathLike | None = None,
        allowed_clients_dir: str | os.PathLike | None = None,
        admin_keys_dir: str | os.PathLike | None = None,
    ) -> Security:
        """Load settings from key files written by ``generate_keys``.

        Parameters
        ----------
        secret_file : path-like
            This endpoint's ``NAME.key_secret`` (holds both keys).
        server_public_file : path-like, optional
            Client side: the server's ``NAME.key``.
        allowed_clients_dir : path-like, optional
            Server side: folder of the allowed clients' ``*.key`` files.
        admin_keys_dir : path-like, optional
            Server side: folder of the administrators' ``*.key`` files.

        Raises
        ------
        OSError
            A file is missing.
        ValueError
            ``secret_file`` holds no secret key, or a key is malformed.
        """
        public, secret = zmq.auth.load_certificate(secret_file)
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key (a public .key file?)")
        server_public = (
            load_public_key(server_public_file)
            if server_public_file is not None
            else None
        )
        return cls(
            public,
            secret,
            server_public_key=server_public,
            allowed_clients_dir=(
                Path(allowed_clients_dir) if allowed_clients_dir is not None else None
            ),
            admin_keys_dir=(
                Path(admin_keys_dir) if admin_keys_dir is not None else None
            ),
        )

    def __repr__(self) -> str:
        # Never show the secret key (reprs end up in logs).
        return (
            f"Security(public_key={self.public_key.decode()!r}, secret_key=<hidden>, "
            f"server_public_key={self.server_public_key!r}, "
            f"allowed_clients_dir={self.allowed_clients_dir!r}, "
            f"admin_keys_dir={self.admin_keys_dir!r})"
        )


def admin_keys(security: Security | None) -> frozenset[str]:
    """Z85 public keys of the administrators of ``security``, read now.

    Empty without settings or ``admin_keys_dir``. Compare them with the
    ``User-Id`` property of a received frame (the Z85 client key the ZAP
    handler reports).
    """
    if security is None or security.admin_keys_dir is None:
        return frozenset()
    keys = zmq.auth.load_certificates(security.admin_keys_dir)
    return frozenset(k.decode("ascii") for k in keys)


def load_public_key(path: str | os.PathLike) -> bytes:
    """The public key of a key file (``NAME.key`` or ``NAME.key_secret``).

    Raises
    ------
    OSError
        The file is missing.
    ValueError
        It holds no public key.
    """
    public, _ = zmq.auth.load_certificate(path)
    return _key(public, f"public key in {path}")


def generate_keys(
    directory: str | os.PathLike, name: str = "framerpc", *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write a new key pair ``NAME.key`` / ``NAME.key_secret`` into ``directory``.

    The folder is created if needed; the secret file is readable by its
    owner only.

    Parameters
    ----------
    directory : path-like
        Where to write the files.
    name : str
        Base name of the files (no path separators).
    overwrite : bool
        Replace existing files of that name; by default they are kept and
        ``FileExistsError`` is raised.

    Returns
    -------
    tuple of Path
        ``(public_file, secret_file)``.

    Raises
    ------
    FileExistsError
        A file of that name exists and ``overwrite`` is false.
    ValueError
        ``name`` is empty or contains a path separator.
    RuntimeError
        libzmq lacks CURVE support.
    """
    _require_curve()
    if not name or name in (".", "..") or any(sep in name for sep in "/\\\0"):
        raise ValueError(f"invalid key name {name!r}: use a plain file name")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not overwrite:
        for path in (public_file, secret_file):
            if path.exists():
                raise FileExistsError(f"{path} exists; not overwriting a key")
    # Create the secret file private before any key is written into it.
    secret_file.touch(mode=0o600)
    os.chmod(secret_file, 0o600)
    public, secret = zmq.auth.create_certificates(folder, name)
    return Path(public), Path(secret)


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
            # One handler per libzmq context: framerpc's servers use a shadow
            # of the context that a registry or the user may use directly.
            entry = _entries.get(context.underlying)
            if entry is None:
                entry = _entries[context.underlying] = _ContextEntry(context)
            entry.leases += 1
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
            entry.leases -= 1
            entry.domains[self.domain] -= 1
            if entry.domains[self.domain] == 0:
                del entry.domains[self.domain]
                entry.handler.certs.pop(self.domain, None)
            if entry.leases == 0:
                del _entries[self.context.underlying]
                entry.handler.stop()

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


def apply_server(socket: zmq.Socket, security: Security | None) -> Authenticator | None:
    """Make ``socket`` a CURVE server; call before ``bind``.

    Parameters
    ----------
    socket : zmq.Socket
        A server-side socket (ROUTER, PUB...), not yet bound.
    security : Security or None
        None leaves the socket as it is (no encryption).

    Returns
    -------
    Authenticator or None
        With ``security.allowed_clients_dir``: the lease that makes the
        context check client keys. The caller owns it and closes it when it
        closes ``socket``. None otherwise.
    """
    if security is None:
        return None
    _require_curve()
    lease = (
        Authenticator(socket.context, security.allowed_clients_dir)
        if security.allowed_clients_dir is not None
        else None
    )
    try:
        if lease is not None:
            lease.apply(socket)
        socket.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
        socket.setsockopt(zmq.CURVE_SERVER, 1)
    except BaseException:
        if lease is not None:
            lease.close()
        raise
    return lease


def apply_client(
    socket: zmq.Socket,
    security: Security | None,
    server_public_key: bytes | str | None = None,
) -> None:
    """Make ``socket`` a CURVE client of a server; call before ``connect``.

    Parameters
    ----------
    socket : zmq.Socket
        A client-side socket (DEALER, REQ, SUB...), not yet connected.
    security : Security or None
        This client's key pair; None leaves the socket as it is.
    server_public_key : bytes or str, optional
        The server's public key; defaults to ``security.server_public_key``.

    Raises
    ------
    ValueError
        No server public key is known.
    """
    if security is None:
        return
    _require_curve()
    server_key = (
        server_public_key
        if server_public_key is not None
        else security.server_public_key
    )
    if server_key is None:
        raise ValueError("a CURVE client needs the server's public key")
    socket.setsockopt(zmq.CURVE_SERVERKEY, _key(server_key, "server_public_key"))
    socket.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
    socket.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)


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
            # keyed like Authenticator's: one handler per libzmq context,
            # shared with the servers' leases (a shadow context is the same)
            entry = _entries.get(context.underlying)
            if entry is None:
                entry = _entries[context.underlying] = _ContextEntry(context)
            entry.leases += 1
        self._entry = entry

    def close(self) -> None:
        """Release the lease (idempotent); the last one stops the handler."""
        with _entries_lock:
            if self._closed:
                return
            self._closed = True
            self._entry.leases -= 1
            if self._entry.leases == 0:
                del _entries[self.context.underlying]
                self._entry.handler.stop()


def peer_key(frame: zmq.Frame) -> str | None:
    """The Z85 CURVE public key of the client that sent ``frame``.

    ``frame`` must come from a ``recv(copy=False)`` on a CURVE server
    socket of a context where a ZAP handler runs (an ``Authenticator``
    or ``ClientKeys`` lease): the handler names each client by its key
    (its ZAP User-Id). None when no handler authenticated the sender.
    """
    try:
        user_id = frame.get("User-Id")
    except zmq.ZMQError:  # EINVAL: the connection has no such property
        return None
    return user_id if isinstance(user_id, str) and user_id else None
