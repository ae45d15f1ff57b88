"""Helpers shared by tests/transport/test_security*.py: key files, a wait bound."""

from __future__ import annotations

import shutil
from pathlib import Path

from framerpc.security import Security, generate_keys

#: A refused client gets nothing: how long to wait for that nothing (ms).
REFUSED_WAIT_MS = 300


class Keys:
    """Key files of a test: a server, allowed clients and a stranger."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        self.server_public, self.server_secret = generate_keys(root / "server", "srv")
        self.alice_public, self.alice_secret = self.client("alice", allow=True)
        self.mallory_public, self.mallory_secret = self.client("mallory", allow=False)

    def client(self, name: str, allow: bool) -> tuple[Path, Path]:
        """A new client key pair; its public file is copied to ``allowed``."""
        public, secret = generate_keys(self.root / name, name)
        if allow:
            shutil.copy(public, self.allowed / public.name)
        return public, secret

    def server(self, allowed: Path | None = None) -> Security:
        return Security.from_files(
            self.server_secret, allowed_clients_dir=allowed or self.allowed
        )

    def for_client(self, secret: Path) -> Security:
        return Security.from_files(secret, server_public_file=self.server_public)
