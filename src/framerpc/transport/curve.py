"""CURVE set-up of sockets: ``apply_server`` before bind, ``apply_client``
before connect, and ``peer_key`` (who sent a message)."""

from __future__ import annotations

import zmq

from .authenticator import Authenticator
from .keys import Security, _key, _require_curve

__all__ = ["apply_client", "apply_server", "peer_key"]


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
