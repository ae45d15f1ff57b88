"""URL checks where a URL is given (transport.check_url from client, server,
registry, registry helpers and the command) and the FRAMERPC_PURE spellings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from framerpc import _env, cli, transport
from framerpc.client import RPCClient
from framerpc.registry import (
    DeviceRegistry,
    RegistryLink,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)
from framerpc.server import RPCServer

#: Generous bound (s) for a child interpreter: catches a hang only.
PROCESS_WAIT_S = 60
ROOT = Path(__file__).resolve().parents[2]

GOOD_BOTH = [
    "tcp://127.0.0.1:5555",
    "tcp://localhost:1",
    "tcp://[::1]:80",
    "tcp://eth0;192.168.1.2:5000",
    "ipc:///tmp/x.sock",
    "ipc://@abstract",
    "inproc://name",
]
GOOD_BIND_ONLY = ["tcp://127.0.0.1", "tcp://*:*", "tcp://*:0", "tcp://0.0.0.0"]
BAD_BOTH = [
    ("127.0.0.1:5555", "no transport"),
    ("http://host:80", "unknown transport 'http'"),
    ("inproc://", "empty address"),
    ("tcp://", "empty address"),
    ("tcp://:5555", "malformed host"),
    ("tcp://host:port", "port 'port'"),
    ("tcp://host:65536", "65536"),
    ("tcp://host:5/x", "5/x"),
    ("tcp://a b:5", "blank"),
    ("tcp://a:1:2", "malformed host"),
]


@pytest.mark.parametrize("url", GOOD_BOTH)
def test_accepted_everywhere(url):
    assert transport.check_url(url, for_bind=False) == url
    assert transport.check_url(url, for_bind=True) == url


@pytest.mark.parametrize("url", GOOD_BIND_ONLY)
def test_a_free_port_only_binds(url):
    assert transport.check_url(url, for_bind=True) == url
    with pytest.raises(ValueError, match="to connect"):
        transport.check_url(url, for_bind=False)


@pytest.mark.parametrize(("url", "problem"), BAD_BOTH)
@pytest.mark.parametrize("for_bind", [False, True])
def test_refused_with_one_line_naming_url_and_forms(url, problem, for_bind):
    with pytest.raises(ValueError) as info:
        transport.check_url(url, for_bind=for_bind)
    message = str(info.value)
    assert "\n" not in message
    assert repr(url) in message and problem in message
    assert "tcp://HOST:PORT" in message and "ipc:///path" in message
    assert "inproc://name" in message
    assert ("tcp://HOST (a free port)" in message) == for_bind


def test_a_url_must_be_a_string():
    with pytest.raises(ValueError, match="got bytes, not str"):
        transport.check_url(b"tcp://h:1", for_bind=False)


# -- where URLs are given ----------------------------------------------------------


def test_client_refuses_a_bad_url(ctx):
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1:5555' to connect"):
        RPCClient(ctx, "127.0.0.1:5555")
    with pytest.raises(ValueError, match="no port"):
        RPCClient(ctx, "tcp://127.0.0.1")


def test_server_refuses_a_bad_url(ctx):
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1' to bind \(no transport\)"):
        RPCServer(ctx, "127.0.0.1")
    with pytest.raises(ValueError, match="port 'x'"):
        RPCServer(ctx, "tcp://127.0.0.1:x")


def test_server_with_a_free_port_still_binds(ctx):
    server = RPCServer(ctx, "tcp://127.0.0.1")
    try:
        assert server.port is not None and server.url.endswith(f":{server.port}")
    finally:
        server.stop_server()


def test_registry_refuses_a_bad_address(ctx):
    with pytest.raises(ValueError, match=r"'tcp://127\.0\.0\.1:abc' to bind"):
        DeviceRegistry(ctx, "127.0.0.1", port="abc")
    with pytest.raises(ValueError, match="unknown transport 'udp'"):
        DeviceRegistry(ctx, "udp://127.0.0.1:5")


def test_registry_helpers_refuse_a_bad_url(ctx):
    bad = "localhost:5555"
    calls = [
        lambda: list_devices(ctx, bad),
        lambda: register_device(ctx, bad, "cam", "tcp://h:1"),
        lambda: unregister_device(ctx, bad, "some-uuid"),
        lambda: send_alive_check(ctx, bad, "some-uuid"),
        lambda: RegistryLink(ctx, bad, "cam", "c", "tcp://h:1", 10),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"'localhost:5555' to connect"):
            call()


def test_register_to_registry_refuses_a_bad_url(ctx):
    server = RPCServer(ctx, "inproc://url-check-server")
    try:
        with pytest.raises(ValueError, match="no port"):
            server.register_to_registry("cam", "c", "tcp://127.0.0.1")
    finally:
        server.stop_server()


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "127.0.0.1:5555"],
        ["inspect", "tcp://127.0.0.1"],
        ["call", "tcp://h:99999", "m"],
        ["get", "http://h:1", "p"],
        ["set", "inproc://", "p", "1"],
        ["watch", "127.0.0.1:5"],
        ["inspect", "cam", "--registry", "127.0.0.1:5555"],
        ["registry", "--addr", "127.0.0.1", "--port", "nope"],
    ],
)
def test_command_refuses_a_bad_url_in_one_line(argv, capsys):
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad URL"), lines


# -- FRAMERPC_PURE -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("  ", False),
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        (" On ", True),
        ("2", None),
        ("ture", None),
    ],
)
def test_parse_flag(value, expected):
    assert _env.parse_flag(value) is expected


def test_an_unknown_value_warns_and_counts_as_false(monkeypatch):
    monkeypatch.setenv("FRAMERPC_TEST_FLAG", "maybe")
    with pytest.warns(RuntimeWarning, match="FRAMERPC_TEST_FLAG='maybe'.*1/true"):
        assert _env.env_flag("FRAMERPC_TEST_FLAG") is False


def _engines(value: str | None) -> tuple[str, str]:
    """(framing, I/O) engines a fresh interpreter picks with FRAMERPC_PURE=value,
    and its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "FRAMERPC_PURE"}
    if value is not None:
        env["FRAMERPC_PURE"] = value
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import framerpc.framing as f, framerpc.transport as t; "
            "print(f.IMPLEMENTATION, t.IO_IMPLEMENTATION)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


def test_pure_spellings_in_a_child_interpreter():
    default, _ = _engines(None)
    assert default in ("compiled compiled", "pure pure")
    for value in ("1", "true", "YES", "On"):
        assert _engines(value) == ("pure pure", ""), value
    for value in ("", "0", "False", "no", "OFF"):
        assert _engines(value) == (default, ""), value
    engines, warning = _engines("bogus")
    assert engines == default
    assert "FRAMERPC_PURE='bogus' is not understood" in warning


@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the checkout")
def test_the_build_refuses_an_unknown_value():
    env = {**os.environ, "FRAMERPC_PURE": "perhaps"}
    done = subprocess.run(
        [sys.executable, "setup.py", "--name"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_WAIT_S,
    )
    assert done.returncode != 0
    assert "FRAMERPC_PURE='perhaps' is not understood" in done.stderr
