"""``framerpc inspect`` and ``framerpc watch`` show a device's streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from framerpc import RPCServer, RPCStream, cli

#: Ceiling (s) of the publishing thread: catches a hang only.
WAIT_S = 20


class Scope(RPCServer):
    """A device with a stream and no signal."""

    traces = RPCStream(doc="oscilloscope traces")


@pytest.fixture
def scope() -> Iterator[Scope]:
    ctx = zmq.Context()
    server = Scope(ctx, "tcp://127.0.0.1")
    server.start()
    yield server
    server.close()
    ctx.term()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_inspect_lists_streams(scope, capsys):
    status, out, err = run(capsys, "inspect", scope.url)
    assert status == 0, err
    assert "streams:\n  traces (frames + info)\n      oscilloscope traces" in out


def test_watch_prints_stream_frames(scope, capsys):
    """Frames are published until the watcher has printed its count."""
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.wait(0.01) and i < WAIT_S * 100:
            scope.traces.publish(np.zeros((2, 5), np.float32), {"n": i})
            i += 1

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        status, out, err = run(capsys, "watch", scope.url, "traces", "--count", "2")
    finally:
        stop.set()
        publisher.join()
    assert status == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [name for name, _ in rows] == ["traces", "traces"]
    (first,) = json.loads(rows[0][1])
    assert first["shape"] == [2, 5] and first["dtype"] == "float32"
    assert {"n", "seq", "t", "dropped", "epoch"} <= first["info"].keys()
    (second,) = json.loads(rows[1][1])
    assert second["info"]["seq"] > first["info"]["seq"]


def test_watch_names_streams_among_the_choices(scope, capsys):
    status, _, err = run(capsys, "watch", scope.url, "bang")
    assert status == 1 and "traces" in err
