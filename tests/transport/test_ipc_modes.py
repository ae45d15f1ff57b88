"""ipc:// socket files are private by default: mode 0600 (the signal socket
too), widened by ``SocketOptions.ipc_mode``; abstract names are refused
unless asked for (issue 11)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from devices import CameraServer

from framerpc import transport
from framerpc.transport import SocketOptions, sockets


def _mode(path: Path) -> int:
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    return stat.S_IMODE(info.st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: what libzmq alone would turn into 0777 files."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_server_files_are_private_by_default(ctx, tmp_path, open_umask, serve):
    path = tmp_path / "cam.sock"
    server = serve(CameraServer(ctx, f"ipc://{path}"))
    assert server.url == f"ipc://{path}"
    assert _mode(path) == 0o600
    assert _mode(Path(f"{path}.signals")) == 0o600
    # no staging folder is left next to it
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cam.sock", "cam.sock.signals"]


def test_mode_is_widened_by_the_options(ctx, tmp_path, open_umask, serve, connect):
    path = tmp_path / "shared.sock"
    options = SocketOptions(ipc_mode=0o660)
    server = serve(CameraServer(ctx, f"ipc://{path}", options=options))
    assert _mode(path) == 0o660
    assert _mode(Path(f"{path}.signals")) == 0o660
    assert connect(server.url).echo("hi") == "hi"


def test_private_server_answers_its_owner(ctx, tmp_path, serve, connect):
    server = serve(CameraServer(ctx, f"ipc://{tmp_path}/own.sock"))
    proxy = connect(server.url)
    received = []
    proxy.frame_ready.connect(received.append)
    assert proxy.echo(5) == 5


def test_files_are_removed_when_the_server_stops(ctx, tmp_path):
    path = tmp_path / "gone.sock"
    server = CameraServer(ctx, f"ipc://{path}")
    server.stop_server()
    assert not path.exists() and not Path(f"{path}.signals").exists()


def test_a_stale_file_is_replaced(ctx, tmp_path, serve, connect):
    path = tmp_path / "stale.sock"
    first = CameraServer(ctx, f"ipc://{path}")
    # a crashed run leaves its file; simulate it with the bound socket's file
    os.link(path, tmp_path / "kept")
    first.stop_server()
    os.rename(tmp_path / "kept", path)
    server = serve(CameraServer(ctx, f"ipc://{path}"))
    assert _mode(path) == 0o600
    assert connect(server.url).echo(1) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_abstract_names_are_refused_unless_allowed(ctx, serve, connect):
    name = f"ipc://@framerpc-test-{uuid.uuid4().hex}"
    with pytest.raises(ValueError, match="abstract"):
        CameraServer(ctx, name)
    options = SocketOptions(allow_abstract_ipc=True)
    server = serve(CameraServer(ctx, name, options=options))
    assert connect(server.url).echo(2) == 2


def test_bad_mode_is_refused(ctx, tmp_path):
    sock = ctx.socket(zmq.ROUTER)
    try:
        with pytest.raises(ValueError, match="ipc_mode"):
            transport.bind(sock, f"ipc://{tmp_path}/x", SocketOptions(ipc_mode=0o4777))
    finally:
        sock.close(0)


def test_bind_ipc_private_for_other_sockets(ctx, tmp_path, open_umask):
    """The helper the registry (or any bound socket) uses."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        url = f"ipc://{tmp_path}/reg.sock"
        assert transport.bind_ipc_private(sock, url, SocketOptions()) == url
        assert _mode(tmp_path / "reg.sock") == 0o600
    finally:
        transport.close_quietly(sock)
    assert not (tmp_path / "reg.sock").exists()


def test_long_path_falls_back_to_chmod_after_bind(ctx, tmp_path, open_umask):
    # a path that fits a socket address, but not with the staging folder
    folder = tmp_path
    budget = sockets._SUN_PATH_MAX - 1 - len(os.fsencode(str(folder))) - 1
    path = folder / ("n" * (budget - 1))
    sock = ctx.socket(zmq.ROUTER)
    try:
        transport.bind_ipc_private(sock, f"ipc://{path}", SocketOptions())
        assert _mode(path) == 0o600
    finally:
        transport.close_quietly(sock)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may traverse (pytest's own is private)."""
    folder = Path(tempfile.mkdtemp(prefix="framerpc-ipc-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _other_user_connects(path: Path) -> bool:
    """Whether user ``nobody`` can connect to the socket file ``path``."""
    pid = os.fork()
    if pid == 0:  # the child: become nobody, try to connect, report
        import socket

        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(str(path))
                code = 1
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status)
    assert code in (0, 1), "the child failed"
    return code == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize(("mode", "allowed"), [(None, False), (0o666, True)])
def test_another_user_connects_only_when_the_mode_allows(
    ctx, open_folder: Path, open_umask, serve: Callable, mode, allowed
):
    options = SocketOptions() if mode is None else SocketOptions(ipc_mode=mode)
    path = open_folder / "priv.sock"
    serve(CameraServer(ctx, f"ipc://{path}", options=options))
    assert _other_user_connects(path) is allowed
    assert _other_user_connects(Path(f"{path}.signals")) is allowed
