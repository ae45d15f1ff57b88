"""ZeroMQ URLs: parsing and checking them, and deriving the endpoints of
companion sockets (the signal PUB socket) from a server's URL."""

from __future__ import annotations

import re

__all__ = ["parse_url", "check_url", "derive_endpoint", "connect_url_for"]

_SCHEMES = ("tcp", "ipc", "inproc")
_URL_RE = re.compile(r"^(tcp|ipc|inproc)://(.+)$")
_TCP_PORT_RE = re.compile(r"^(.*):(\d+|\*)$")


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
