"""A benchmark client waits for the parent between phases.

The parent reads both processes' CPU counters (``/proc/<pid>/task``) when
a phase starts and when its samples arrive; a client that went on at once
started calls before the first reading and closed its context (whose
threads' CPU time then vanished from /proc) before the last one, which
showed as a negative ``cpu/call`` for the last workload.
"""

from __future__ import annotations

from framerpc.tools.bench import processes


class _Conn:
    """The client's end of the pipe, scripted, logging what happens."""

    def __init__(self, log: list) -> None:
        self.log = log
        self._url_sent = False

    def send(self, message: object) -> None:
        self.log.append(("sent", message[0] if isinstance(message, tuple) else message))

    def recv(self) -> object:
        if not self._url_sent:
            self._url_sent = True
            return "tcp://127.0.0.1:1"
        self.log.append(("go",))
        return "go"


class _Client:
    system = "raw"

    def __init__(self, log: list) -> None:
        self.log = log

    def call(self, workload: object) -> None:
        if self.log[-1] != ("call",):
            self.log.append(("call",))

    def close(self) -> None:
        self.log.append(("close",))


def test_the_client_waits_for_the_parent_around_every_phase(monkeypatch):
    log: list = []
    monkeypatch.setattr(processes, "make_client", lambda system, url: _Client(log))
    plan = (("echo", 3, 1), ("64KiB", 0, 4))  # a timed and an untimed phase
    processes.run_client(_Conn(log), "raw", (plan, None, 0.0))
    phase = [("sent", "start"), ("go",), ("call",), ("sent", "samples"), ("go",)]
    assert log == [("sent", "hello")] + phase * 2 + [("sent", "done"), ("close",)]
