"""CURVE keys: the ``Security`` settings, key files and their generation.

Part of the opt-in CURVE encryption and client authentication (through
``zmq.auth``); ``curve`` sets sockets up, ``authenticator`` runs the ZAP
handler.

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

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = [
    "Security",
    "admin_keys",
    "curve_available",
    "generate_keys",
    "load_public_key",
]

#: Length of a CURVE key in Z85 text (32 bytes of key).
_Z85_KEY_LEN = 40


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
