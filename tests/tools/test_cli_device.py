"""Tests of ``framerpc inspect / call / get / set / watch`` (framerpc.cli_device)
and of the command's one-line errors, against live servers and registries.

The command makes its own zmq context, so devices and registries listen on
loopback TCP. Most tests call ``cli.main`` in-process (fast); one runs the
installed ``framerpc`` entry point.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from legacy_peers import LegacyServer

from framerpc.property import RPCProperty
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal
from framerpc.tools import cli, cli_device

#: Generous bound (s) for a child process: catches a hang only.
PROCESS_WAIT_S = 30
#: How long (s) the ticker waits at most for a watcher before giving up.
TICK_LIMIT_S = 20


class Stage(RPCServer):
    """A motorised stage: typed, documented methods, a frame, two signals."""

    moved = RPCSignal(float, str)
    tick = RPCSignal(int)

    def __init__(self, ctx: zmq.Context, url: str) -> None:
        super().__init__(ctx, url)
        self._speed = 2.5
        self.stop_ticking = threading.Event()
        self.ticker: threading.Thread | None = None

    @RPCProperty
    def speed(self) -> float:
        """Speed in mm/s, positive."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"speed must be positive, got {value}")
        self._speed = value

    @RPCProperty
    def temperature(self) -> float:
        raise RuntimeError("no sensor")

    @RPCServer.register_method_json
    def move(self, mm: float, *, relative: bool = False) -> list:
        """Move to ``mm`` (or by it); returns what was asked.

        A second paragraph that inspect must not show.
        """
        return [mm, relative]

    @RPCServer.register_method_json(timeout=100)
    def stall(self, seconds: float) -> None:
        """Outlast the 100 ms timeout."""
        self.stop_ticking.wait(seconds)

    @RPCServer.register_method_json
    def fail(self) -> None:
        raise RuntimeError("motor jammed")

    @RPCServer.register_method_buffer
    def snap(self, rows: int, cols: int) -> tuple:
        """A frame of ``rows`` x ``cols`` uint16 pixels."""
        frame = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
        return frame, {"rows": rows, "cols": cols}

    @RPCServer.register_method_buffer
    def raw(self, size: int) -> tuple:
        return bytes(range(256)) * (size // 256) + bytes(size % 256), {}

    @RPCServer.register_method_json
    def start_ticking(self) -> None:
        """Emit tick(0), tick(1)... until the test ends."""

        def run() -> None:
            count = 0
            while not self.stop_ticking.wait(0.005) and count < TICK_LIMIT_S * 200:
                self.tick.emit(count)
                self.moved.emit(0.5, "tick")
                count += 1

        self.ticker = threading.Thread(target=run, daemon=True)
        self.ticker.start()


@pytest.fixture
def stage(ctx, serve) -> Iterator[Stage]:
    server = Stage(ctx, "tcp://127.0.0.1")
    serve(server)
    yield server
    server.stop_ticking.set()
    if server.ticker is not None:
        server.ticker.join(timeout=5)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``framerpc argv`` in-process: (status, stdout, stderr)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status: int, out: str, err: str, *words: str) -> None:
    assert status == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- inspect -----------------------------------------------------------------------


def test_inspect_shows_signatures_docs_values_and_signal_types(stage, capsys):
    status, out, err = run(capsys, "inspect", stage.url)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"(unnamed) at {stage.url} (native)"
    assert "methods:" in lines and "buffer methods:" in lines
    move = lines.index("  move(mm: float, *, relative: bool = False) -> list")
    assert lines[move + 1] == "      Move to ``mm`` (or by it); returns what was asked."
    assert "second paragraph" not in out
    assert "  fail() -> None" in lines  # no docstring: no doc line
    assert lines[lines.index("  fail() -> None") + 1].startswith("  ")
    snap = lines.index("  snap(rows: int, cols: int) -> tuple")
    assert lines.index("buffer methods:") < snap
    assert lines[lines.index("properties:") + 1] == "  speed = 2.5"
    assert lines[lines.index("properties:") + 2] == "      Speed in mm/s, positive."
    # a getter that fails shows its error, and the rest is still shown
    failing = lines[lines.index("properties:") + 3]
    assert failing == "  temperature = <RuntimeError: no sensor>"
    signals = lines[lines.index("signals:") + 1 :]
    assert signals == ["  moved(float, str)", "  tick(int)"]


def test_inspect_of_an_older_json_server_lists_names(ctx, capsys):
    old = LegacyServer(ctx)
    old.start()
    try:
        status, out, err = run(capsys, "inspect", old.url)
    finally:
        old.close()
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"legacy-cam at {old.url} (legacy)"
    assert "  add(...)" in lines and "  grab(...)" in lines
    assert "  gain = 1" in lines and '  mode = "normal"' in lines
    assert "  count(...)" in lines


def test_a_name_is_looked_up_in_the_registry(stage, registry, capsys):
    stage.register_to_registry("stage", "x-stage", registry.url)
    status, out, err = run(capsys, "inspect", "x-stage", "--registry", registry.url)
    assert status == 0, err
    assert out.splitlines()[0] == f"x-stage at {stage.url} (native)"
    status, out, err = run(
        capsys, "call", "x-stage", "move", "3", "--registry", registry.url
    )
    assert (status, json.loads(out)) == (0, [3, False])


def test_a_wildcard_address_is_reached_where_the_registry_is(stage, registry, capsys):
    # a server bound on every interface registers tcp://0.0.0.0:PORT
    from framerpc.registry import register_device

    register_device(
        registry.context, registry.url, "stage", f"tcp://0.0.0.0:{stage.port}", "wild"
    )
    status, out, err = run(capsys, "inspect", "wild", "--registry", registry.url)
    assert status == 0, err
    assert out.splitlines()[0].endswith(f"at tcp://127.0.0.1:{stage.port} (native)")


# -- call --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["1.5"], [1.5, False]),
        (["2", "relative=true"], [2, True]),
        (["-4", "relative=True"], [-4, True]),  # a Python literal
        (['"far"'], ["far", False]),
        (["[1, 2]"], [[1, 2], False]),
        (["(1, 'a')"], [[1, "a"], False]),
    ],
)
def test_call_reads_json_and_python_literals(stage, capsys, words, expected):
    status, out, err = run(capsys, "call", stage.url, "move", *words)
    assert status == 0, err
    assert json.loads(out) == expected


def test_call_of_a_buffer_method_summarises_and_saves(stage, capsys, tmp_path):
    target = tmp_path / "frame.npy"
    status, out, err = run(
        capsys, "call", stage.url, "snap", "3", "5", "--save", str(target)
    )
    assert status == 0, err
    expected = np.arange(15, dtype=np.uint16).reshape(3, 5)
    assert json.loads(out) == {
        "shape": [3, 5],
        "dtype": "uint16",
        "size": 30,
        "crc32": f"{zlib.crc32(expected.tobytes()):08x}",
        "info": {"rows": 3, "cols": 5},
    }
    assert f"saved to {target}" in err
    loaded = np.load(target)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, expected)


def test_call_of_a_bytes_buffer_method(stage, capsys, tmp_path):
    target = tmp_path / "raw.npy"
    status, out, err = run(
        capsys, "call", stage.url, "raw", "300", "--save", str(target)
    )
    assert status == 0, err
    data = bytes(range(256)) + bytes(44)
    summary = json.loads(out)
    assert summary["shape"] == [300] and summary["dtype"] == "uint8"
    assert summary["crc32"] == f"{zlib.crc32(data):08x}"
    assert np.load(target).tobytes() == data


def test_save_needs_an_array(stage, capsys, tmp_path):
    status, _out, err = run(
        capsys, "call", stage.url, "move", "1", "--save", str(tmp_path / "x.npy")
    )
    assert status == 1 and "no array or buffer" in err
    assert not (tmp_path / "x.npy").exists()


# -- get / set ---------------------------------------------------------------------


def test_get_and_set_a_property(stage, capsys):
    assert run(capsys, "get", stage.url, "speed")[:2] == (0, "2.5\n")
    assert run(capsys, "set", stage.url, "speed", "4") == (0, "", "")
    assert stage.speed == 4
    assert run(capsys, "get", stage.url, "speed")[:2] == (0, "4\n")


# -- watch -------------------------------------------------------------------------


def test_watch_prints_emissions_until_the_count(stage, capsys):
    stage.start_ticking()
    status, out, err = run(capsys, "watch", stage.url, "tick", "--count", "3")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    names = [line.split("\t")[0] for line in lines]
    values = [json.loads(line.split("\t")[1]) for line in lines]
    assert names == ["tick"] * 3
    assert all(len(v) == 1 and type(v[0]) is int for v in values)
    assert values == sorted(values)  # in emission order


def test_watch_all_signals_shows_their_arguments(stage, capsys):
    stage.start_ticking()
    status, out, err = run(capsys, "watch", stage.url, "--count", "6")
    assert status == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    seen = {name: json.loads(values) for name, values in rows}
    assert seen.keys() == {"tick", "moved"}
    assert seen["moved"] == [0.5, "tick"]


def test_watch_ends_after_the_duration(stage, capsys):
    # no emissions at all: the duration alone ends it
    assert run(capsys, "watch", stage.url, "--duration", "0.1") == (0, "", "")


# -- one-line errors ---------------------------------------------------------------


def test_user_errors_print_one_line_and_exit_1(stage, registry, capsys, tmp_path):
    url = stage.url
    nobody = f"ipc://{tmp_path}/nobody.sock"
    cases = [
        (["call", "127.0.0.1:5555", "move"], ["127.0.0.1:5555", "tcp://HOST:PORT"]),
        (["inspect", "tcp://127.0.0.1"], ["no port"]),
        (["list", "127.0.0.1:5555"], ["127.0.0.1:5555", "no transport"]),
        (["inspect", "ghost", "--registry", registry.url], ["ghost", "registered"]),
        (
            ["inspect", "ghost", "--registry", nobody, "--timeout", "200"],
            ["ghost", "unreachable"],
        ),
        (["inspect", nobody, "--timeout", "200"], [nobody, "no device answers"]),
        (["call", url, "teleport"], ["teleport", "move"]),
        (["get", url, "colour"], ["colour", "speed"]),
        (["get", url, "temperature"], ["reading temperature failed", "no sensor"]),
        (["set", url, "colour", "1"], ["colour"]),
        (["watch", url, "bang"], ["bang", "tick"]),
        (["watch", url, "--count", "0"], ["--count"]),
        (["get", url, "speed", "--timeout", "-1"], ["--timeout"]),
        (["call", url, "move", "far"], ["far", "quotes"]),
        (["call", url, "move", "{1, 2}"], ["cannot send", "set"]),
        (["call", url, "fail"], ["RuntimeError: motor jammed"]),
        (["set", url, "speed", "-1"], ["speed must be positive"]),
        (["call", url, "stall", "30"], [url]),  # a timeout; blocks the server
        (["registry", "--addr", "127.0.0.1", "--port", str(registry.port)], ["bind"]),
    ]
    for argv, words in cases:
        status, out, err = run(capsys, *argv)
        assert "Traceback" not in err, argv
        assert_one_error_line(status, out, err, *words)
    stage.stop_ticking.set()  # releases the stalled call


def test_verbose_adds_the_traceback(capsys):
    status, _, err = run(capsys, "-v", "list", "127.0.0.1:5555")
    assert status == 1
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error:")


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"framerpc {metadata.version('framerpc')}\n"


def test_a_wildcard_registry_prints_where_to_connect():
    lines = cli._bound_lines("tcp://0.0.0.0:5555", "tcp://127.0.0.1:5555", 5555)
    assert lines[0] == "registry listening at tcp://0.0.0.0:5555 (Ctrl-C stops it)"
    assert "every interface" in lines[1] and "tcp://127.0.0.1:5555" in lines[1]
    local = cli._bound_lines("tcp://127.0.0.1:7", "tcp://127.0.0.1:7", 7)
    assert local == ["registry listening at tcp://127.0.0.1:7 (Ctrl-C stops it)"]


# -- the installed entry point -----------------------------------------------------


def _entry_point() -> str:
    found = shutil.which("framerpc", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the framerpc script is not installed next to this python")
    return found


def test_entry_point_calls_and_reports_errors(stage):
    script = _entry_point()
    env = {**os.environ}
    done = subprocess.run(
        [script, "call", stage.url, "move", "7", "relative=1"],
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT_S,
        env=env,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, [7, 1]), done.stderr
    assert done.stderr == ""
    done = subprocess.run(
        [script, "list", "127.0.0.1:5555"],
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT_S,
        env=env,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: bad URL")


def test_results_the_json_module_cannot_show():
    big = np.zeros((40, 40), np.uint8)
    shown = cli_device.jsonable(
        {1: np.float32(0.5), "b": b"\x01\xff", "a": np.arange(3), "big": big}
    )
    assert shown == {
        "1": 0.5,
        "b": {"bytes": 2, "hex": "01ff"},
        "a": [0, 1, 2],
        "big": {"array": cli_device.summarize(big)},
    }
    assert shown["big"]["array"]["crc32"] == f"{zlib.crc32(big.tobytes()):08x}"


def test_parse_value_prefers_json():
    assert cli_device.parse_value("true") is True
    assert cli_device.parse_value("True") is True
    assert cli_device.parse_value("null") is None
    assert cli_device.parse_value("'x'") == "x"
    with pytest.raises(cli_device.CommandError, match="quotes"):
        cli_device.parse_value("x")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGINT")
def test_watch_runs_until_ctrl_c(stage):
    stage.start_ticking()
    process = subprocess.Popen(
        [_entry_point(), "watch", stage.url, "tick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a hang below aborts it: its threads' stacks then say where
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        # Ctrl-C as in a terminal: a test run started in the background by
        # a non-interactive shell inherits SIGINT ignored, and so would
        # the child (it hung in such CI runs: its main thread still waiting)
        preexec_fn=_sigint_default,
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=PROCESS_WAIT_S), "no emission shown"
        assert process.stdout.readline().startswith("tick\t")
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=PROCESS_WAIT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            process.wait(timeout=PROCESS_WAIT_S)
            pytest.fail(f"watch hung after Ctrl-C:\n{process.stderr.read()}")
        assert status == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=PROCESS_WAIT_S)
        process.stdout.close()
        process.stderr.close()
