"""Tests of the ``framerpc`` command (framerpc.cli): keys, list, demo, registry.

The command makes its own zmq context, so it reaches the test's registry
over loopback TCP (an inproc name would not cross contexts).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from framerpc import cli, security
from framerpc.registry import register_device

#: Generous bound (s) for a subprocess to start or stop: catches a hang only.
PROCESS_WAIT_S = 30
#: Loopback, and a port the OS picks.
REGISTRY_ARGS = ["--addr", "127.0.0.1", "--port", "0"]


# -- keys --------------------------------------------------------------------------


@pytest.mark.skipif(not security.curve_available(), reason="libzmq lacks CURVE")
def test_keys_writes_a_pair_and_prints_the_paths(tmp_path, capsys):
    folder = tmp_path / "keys"
    assert cli.main(["keys", str(folder), "--name", "camera-1"]) == 0
    out = capsys.readouterr().out
    public, secret = folder / "camera-1.key", folder / "camera-1.key_secret"
    assert f"public key: {public}" in out
    assert f"secret key: {secret}" in out
    settings = security.Security.from_files(secret)
    assert settings.public_key == security.load_public_key(public)


@pytest.mark.skipif(not security.curve_available(), reason="libzmq lacks CURVE")
def test_keys_default_name_and_no_silent_overwrite(tmp_path, capsys):
    assert cli.main(["keys", str(tmp_path)]) == 0
    before = security.load_public_key(tmp_path / "framerpc.key")
    capsys.readouterr()
    assert cli.main(["keys", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "exists" in captured.err
    assert security.load_public_key(tmp_path / "framerpc.key") == before
    assert cli.main(["keys", str(tmp_path), "--force"]) == 0
    assert security.load_public_key(tmp_path / "framerpc.key") != before


def test_keys_reports_a_bad_name(tmp_path, capsys):
    assert cli.main(["keys", str(tmp_path), "--name", "a/b"]) == 1
    assert "error" in capsys.readouterr().err


# -- list --------------------------------------------------------------------------


def test_list_prints_the_registered_devices(ctx, registry, capsys):
    register_device(ctx, registry.url, "camera", "tcp://10.0.0.2:5000", "cam-b")
    register_device(ctx, registry.url, "stage", "tcp://10.0.0.3:5000", "axis-a")
    assert cli.main(["list", registry.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "axis-a\tstage\ttcp://10.0.0.3:5000",
        "cam-b\tcamera\ttcp://10.0.0.2:5000",
    ]


def test_list_of_an_empty_registry_prints_nothing(registry, capsys):
    assert cli.main(["list", registry.url, "--timeout", "5000"]) == 0
    assert capsys.readouterr().out == ""


def test_list_without_a_registry_fails_with_a_message(tmp_path, capsys):
    nobody = f"ipc://{tmp_path}/no-registry.sock"
    assert cli.main(["list", nobody, "--timeout", "200"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error:") and "unreachable" in captured.err


# -- demo --------------------------------------------------------------------------


def test_demo_runs_end_to_end(capsys):
    assert cli.main(["demo", "--frames", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13, lines  # 9, then 4 of the stream part (test_demo_streams)
    assert re.fullmatch(
        r"registry at tcp://127\.0\.0\.1:\d+; camera 'demo-camera' serving at "
        r"tcp://127\.0\.0\.1:\d+",
        lines[0],
    )
    assert lines[1].startswith("found 'demo-camera' (camera) at tcp://127.0.0.1:")
    assert lines[2] == "exposure set to 2500 us"
    assert lines[3].startswith("fetching 2 frames of each")  # (test_demo_paths)
    assert re.search(r"uint16 1200x800x3 \(5\.76 MB\): .* frames/s .* MB/s", lines[4])
    assert re.search(r"uint8 2160x3840x3 \(24\.88 MB\): .* frames/s", lines[5])
    assert re.search(r"pool 2160x3840x3 \(24\.88 MB\): .* frames/s", lines[6])
    assert re.search(r"socket 2160x3840x3 \(24\.88 MB\): .* frames/s", lines[7])
    match = re.fullmatch(
        r"frame_ready signals received: (\d+); frames grabbed on the server: (\d+)",
        lines[8],
    )
    assert match is not None
    assert int(match.group(2)) == 8  # 2 frames of each of 4 fetches
    assert int(match.group(1)) <= 8  # signals may still be in flight


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "command" in capsys.readouterr().err


# -- registry (a real process, stopped by SIGINT) ----------------------------------


def _start_registry(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "framerpc", "registry", *REGISTRY_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def _running(process: subprocess.Popen) -> Iterator[str]:
    """Yield the URL ``process`` (``framerpc registry``) prints; kill it at
    the end if the test did not stop it."""
    try:
        first = _read_line(process)
        match = re.fullmatch(
            r"registry listening at (tcp://127\.0\.0\.1:\d+) \(Ctrl-C stops it\)",
            first.strip(),
        )
        assert match is not None, first
        yield match.group(1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=PROCESS_WAIT_S)
        process.stdout.close()
        process.stderr.close()


def _read_line(process: subprocess.Popen) -> str:
    """First stdout line of ``process``, failing after PROCESS_WAIT_S seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=PROCESS_WAIT_S):
            raise AssertionError(f"no output; stderr: {process.stderr.read()}")
    line = process.stdout.readline()
    assert line, f"process ended: {process.wait()} {process.stderr.read()}"
    return line


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGINT")
def test_registry_command_serves_until_interrupted(capsys, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    process = _start_registry()
    with _running(process) as url:
        assert cli.main(["list", url, "--timeout", "5000"]) == 0
        assert capsys.readouterr().out == ""
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=PROCESS_WAIT_S) == 0


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="sd_notify uses AF_UNIX")
def test_registry_command_notifies_systemd():
    """Under systemd: READY=1, WATCHDOG=1 while serving, STOPPING=1 on exit."""
    with (
        tempfile.TemporaryDirectory(prefix="sdn-") as folder,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
    ):
        path = os.path.join(folder, "notify.sock")
        notify.bind(path)
        notify.settimeout(PROCESS_WAIT_S)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}  # 0.2 s
        process = _start_registry(env)
        with _running(process):
            assert notify.recv(64) == b"READY=1"
            for _ in range(3):
                assert notify.recv(64) == b"WATCHDOG=1"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=PROCESS_WAIT_S) == 0
        messages = []
        notify.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(64))
        assert messages[-1:] == [b"STOPPING=1"]
        assert set(messages[:-1]) <= {b"WATCHDOG=1"}


def test_bench_hands_its_arguments_to_the_runner(capsys):
    from framerpc.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "framerpc bench" in capsys.readouterr().out
