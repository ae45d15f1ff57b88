"""Tests of framerpc.security at socket level: the shared ZAP authenticator
deciding which clients a ROUTER or PUB answers. Settings, key files and
security wired into the endpoints: test_security_keys.py.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from curve_keys import REFUSED_WAIT_MS, needs_curve

from framerpc.security import (
    Authenticator,
    Security,
    apply_client,
    apply_server,
    load_public_key,
)

pytestmark = needs_curve

#: Generous bound for an allowed exchange (ms): catches a hang only.
ALLOWED_WAIT_MS = 5000


def _zap_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if type(t).__name__ == "AuthenticationThread" and t.is_alive()
    ]


@pytest.fixture
def sockets(ctx: zmq.Context) -> Iterator[Callable[..., zmq.Socket]]:
    """Make sockets with LINGER 0; all closed at the end (before leases)."""
    made: list[zmq.Socket] = []

    def make(kind: int) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


@pytest.fixture
def leases() -> Iterator[list]:
    """Leases to close at the end of the test, after the sockets."""
    held: list = []
    yield held
    for lease in held:
        if lease is not None:
            lease.close()


def _bind_server(sockets, leases, settings: Security | None, kind=zmq.ROUTER):
    server = sockets(kind)
    leases.append(apply_server(server, settings))
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}"


def _exchange(server: zmq.Socket, client: zmq.Socket, wait_ms: int) -> bool:
    """Client sends, the server echoes what it got; True when the echo arrived."""
    # A refused client may never get a connection to queue on (a DEALER
    # with IMMEDIATE): a blocking send would wait for ever.
    if not client.poll(wait_ms, zmq.POLLOUT):
        return False
    client.send(b"ping", zmq.NOBLOCK)
    if not server.poll(wait_ms):
        return False
    identity, message = server.recv_multipart()
    assert message == b"ping"
    server.send_multipart([identity, b"pong"])
    if not client.poll(wait_ms):
        return False
    return client.recv() == b"pong"


def _client(sockets, url: str, settings: Security | None) -> zmq.Socket:
    client = sockets(zmq.DEALER)
    apply_client(client, settings)
    client.connect(url)
    return client


# -- who gets in -------------------------------------------------------------------


def test_allowed_client_gets_a_reply(keys, sockets, leases):
    server, url = _bind_server(sockets, leases, keys.server())
    client = _client(sockets, url, keys.for_client(keys.alice_secret))
    assert _exchange(server, client, ALLOWED_WAIT_MS)
    assert _zap_threads(), "the authenticator thread should run while leased"


def test_client_with_a_key_not_in_the_folder_gets_nothing(keys, sockets, leases):
    server, url = _bind_server(sockets, leases, keys.server())
    stranger = _client(sockets, url, keys.for_client(keys.mallory_secret))
    assert not _exchange(server, stranger, REFUSED_WAIT_MS)
    # ... and the server goes on answering allowed clients
    alice = _client(sockets, url, keys.for_client(keys.alice_secret))
    assert _exchange(server, alice, ALLOWED_WAIT_MS)


def test_client_without_keys_gets_nothing(keys, sockets, leases):
    server, url = _bind_server(sockets, leases, keys.server())
    plain = _client(sockets, url, None)
    assert not _exchange(server, plain, REFUSED_WAIT_MS)


def test_client_with_a_wrong_server_key_gets_nothing(keys, sockets, leases):
    server, url = _bind_server(sockets, leases, keys.server())
    wrong = Security.from_files(
        keys.alice_secret, server_public_file=keys.mallory_public
    )
    assert not _exchange(server, _client(sockets, url, wrong), REFUSED_WAIT_MS)


def test_reload_reads_keys_added_to_the_folder(keys, sockets, leases):
    server, url = _bind_server(sockets, leases, keys.server())
    bob_public, bob_secret = keys.client("bob", allow=False)
    bob = keys.for_client(bob_secret)
    assert not _exchange(server, _client(sockets, url, bob), REFUSED_WAIT_MS)
    shutil.copy(bob_public, keys.allowed / bob_public.name)
    assert not _exchange(server, _client(sockets, url, bob), REFUSED_WAIT_MS), (
        "keys are read when the lease is made, not at each handshake"
    )
    leases[0].reload()
    assert _exchange(server, _client(sockets, url, bob), ALLOWED_WAIT_MS)


def test_signals_pub_sub_accept_the_same_settings(keys, sockets, leases):
    pub, url = _bind_server(sockets, leases, keys.server(), kind=zmq.PUB)
    subscribers = {}
    for name, settings in [
        ("alice", keys.for_client(keys.alice_secret)),
        ("mallory", keys.for_client(keys.mallory_secret)),
        ("plain", None),
    ]:
        sub = sockets(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        apply_client(sub, settings)
        sub.connect(url)
        subscribers[name] = sub
    alice = subscribers["alice"]
    for _ in range(ALLOWED_WAIT_MS // 20):  # publish until the subscription is live
        pub.send(b"signal")
        if alice.poll(20):
            break
    assert alice.recv() == b"signal"
    pub.send(b"signal")
    assert not subscribers["mallory"].poll(REFUSED_WAIT_MS)
    assert not subscribers["plain"].poll(0)


# -- several sockets, one context --------------------------------------------------


def test_servers_with_different_folders_share_a_context(keys, sockets, leases):
    other_allowed = keys.root / "other-allowed"
    other_allowed.mkdir()
    carol_public, carol_secret = keys.client("carol", allow=False)
    shutil.copy(carol_public, other_allowed / carol_public.name)

    first, first_url = _bind_server(sockets, leases, keys.server())
    second, second_url = _bind_server(sockets, leases, keys.server(other_allowed))
    assert len(_zap_threads()) == 1, "one ZAP handler per context"
    alice, carol = keys.for_client(keys.alice_secret), keys.for_client(carol_secret)

    assert _exchange(first, _client(sockets, first_url, alice), ALLOWED_WAIT_MS)
    assert _exchange(second, _client(sockets, second_url, carol), ALLOWED_WAIT_MS)
    assert not _exchange(first, _client(sockets, first_url, carol), REFUSED_WAIT_MS)
    assert not _exchange(second, _client(sockets, second_url, alice), REFUSED_WAIT_MS)

    # closing the first server's lease keeps the second one's checks running
    first.close()
    leases[0].close()
    assert _zap_threads()
    assert _exchange(second, _client(sockets, second_url, carol), ALLOWED_WAIT_MS)
    assert not _exchange(second, _client(sockets, second_url, alice), REFUSED_WAIT_MS)


def test_plain_and_encryption_only_servers_work_beside_an_authenticator(
    keys, sockets, leases
):
    _bind_server(sockets, leases, keys.server())  # starts the ZAP handler
    plain, plain_url = _bind_server(sockets, leases, None)
    assert leases[-1] is None
    assert _exchange(plain, _client(sockets, plain_url, None), ALLOWED_WAIT_MS)

    open_settings = Security.from_files(keys.server_secret)  # no allowed folder
    encrypted, encrypted_url = _bind_server(sockets, leases, open_settings)
    assert leases[-1] is None
    mallory = keys.for_client(keys.mallory_secret)
    assert _exchange(encrypted, _client(sockets, encrypted_url, mallory), 5000)
    assert not _exchange(encrypted, _client(sockets, encrypted_url, None), 300)


def test_last_lease_stops_the_authenticator_thread(ctx, keys):
    assert _zap_threads() == []
    first = Authenticator(ctx, keys.allowed)
    second = Authenticator(ctx, keys.allowed)
    assert first.domain == second.domain
    assert len(_zap_threads()) == 1
    first.close()
    first.close()  # idempotent
    assert first.closed and not second.closed
    assert len(_zap_threads()) == 1
    with pytest.raises(RuntimeError, match="closed"):
        first.reload()
    second.close()
    assert _zap_threads() == []
    # a context may lease again at once after the handler stopped (a server
    # restarted in the same process): the ZAP endpoint must be free at once
    for _ in range(20):
        with Authenticator(ctx, keys.allowed) as again:
            assert "open" in repr(again)
            assert len(_zap_threads()) == 1
        assert "closed" in repr(again)
        assert _zap_threads() == []


def test_each_context_gets_its_own_authenticator(keys):
    contexts = [zmq.Context(), zmq.Context()]
    try:
        held = [Authenticator(c, keys.allowed) for c in contexts]
        assert len(_zap_threads()) == 2
        for lease in held:
            lease.close()
        assert _zap_threads() == []
    finally:
        for context in contexts:
            context.term()


def test_a_foreign_zap_handler_is_reported_and_nothing_leaks(ctx, keys):
    foreign = ctx.socket(zmq.REP)
    foreign.setsockopt(zmq.LINGER, 0)
    foreign.bind("inproc://zeromq.zap.01")
    try:
        with pytest.raises(zmq.ZMQError):
            Authenticator(ctx, keys.allowed)
    finally:
        foreign.unbind("inproc://zeromq.zap.01")  # frees the name at once
        foreign.close()
    assert _zap_threads() == []
    with Authenticator(ctx, keys.allowed):  # the context is not left broken
        pass


# -- no security: nothing changes --------------------------------------------------


def test_none_settings_leave_sockets_plain(sockets, leases):
    server, url = _bind_server(sockets, leases, None)
    client = _client(sockets, url, None)
    assert leases == [None]
    assert server.getsockopt(zmq.CURVE_SERVER) == 0
    assert server.getsockopt(zmq.MECHANISM) == zmq.NULL
    assert client.getsockopt(zmq.MECHANISM) == zmq.NULL
    assert _exchange(server, client, ALLOWED_WAIT_MS)
    assert _zap_threads() == []


def test_apply_sets_curve_options(keys, sockets, leases):
    server = sockets(zmq.ROUTER)
    leases.append(apply_server(server, keys.server()))
    assert server.getsockopt(zmq.MECHANISM) == zmq.CURVE
    assert server.getsockopt(zmq.CURVE_SERVER) == 1
    assert server.getsockopt_string(zmq.ZAP_DOMAIN) == leases[0].domain
    client = sockets(zmq.DEALER)
    alice = keys.for_client(keys.alice_secret)
    apply_client(client, alice)
    assert client.getsockopt(zmq.MECHANISM) == zmq.CURVE
    assert client.getsockopt(zmq.CURVE_SERVER) == 0


def test_apply_client_needs_the_server_key(keys, sockets):
    client = sockets(zmq.DEALER)
    no_server = Security.from_files(keys.alice_secret)
    with pytest.raises(ValueError, match="server's public key"):
        apply_client(client, no_server)
    apply_client(client, no_server, load_public_key(keys.server_public))
    assert client.getsockopt(zmq.MECHANISM) == zmq.CURVE
