"""CURVE key files of a test (``Keys``) and its ``keys`` fixture, loaded as a
plugin by tests/conftest.py for the security tests of every folder
(tests/transport/, tests/server/, tests/registry/); ``needs_curve`` skips a
test where libzmq was built without CURVE; ``REFUSED_WAIT_MS`` bounds the
wait for the nothing a refused client gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from framerpc.security import Security, curve_available, generate_keys

needs_curve = pytest.mark.skipif(
    not curve_available(), reason="libzmq was built without CURVE"
)

#: A refused client gets nothing: how long to wait for that nothing (ms).
REFUSED_WAIT_MS = 300


class Keys:
    """Key files of a test: a server, allowed clients (alice, and admin who
    is also an administrator) and a stranger (mallory).

    ``allowed`` and ``admins`` are the folders of the allowed clients' and
    the administrators' public keys.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        self.admins = root / "admins"
        self.admins.mkdir()
        self.server_public, self.server_secret = generate_keys(root / "server", "srv")
        self.alice_public, self.alice_secret = self.client("alice", allow=True)
        self.mallory_public, self.mallory_secret = self.client("mallory", allow=False)
        self.admin_public, self.admin_secret = self.client(
            "admin", allow=True, admin=True
        )

    def client(self, name: str, allow: bool, admin: bool = False) -> tuple[Path, Path]:
        """A new client key pair; its public file is copied to ``allowed``
        (and ``admins``) as asked."""
        public, secret = generate_keys(self.root / name, name)
        if allow:
            shutil.copy(public, self.allowed / public.name)
        if admin:
            shutil.copy(public, self.admins / public.name)
        return public, secret

    def server(
        self, allowed: Path | None = None, admins: Path | None = None
    ) -> Security:
        """The server's settings: clients of ``allowed`` (this test's folder
        by default) only; administrators of ``admins`` (none by default)."""
        return Security.from_files(
            self.server_secret,
            allowed_clients_dir=allowed or self.allowed,
            admin_keys_dir=admins,
        )

    def for_client(self, secret: Path) -> Security:
        """A client's settings, with the server's public key."""
        return Security.from_files(secret, server_public_file=self.server_public)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """This test's ``Keys``, in its tmp_path."""
    return Keys(tmp_path)
