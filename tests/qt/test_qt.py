"""framerpc.qt: signals, call outcomes and frames arrive in the GUI thread.

Runs on Qt's offscreen platform (no display needed) with whichever binding
qtpy finds (PySide6 in the test extra); skipped without pytest-qt or Qt.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import os
import sys
import threading
import traceback
import weakref

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication
pytest.importorskip("pytestqt")
pytest.importorskip("qtpy")

from conftest import wait_until
from qtpy import QtCore

import framerpc
from framerpc.qt import CallRunner, FramePump, QtSignals

WAIT_MS = 20_000  # a ceiling that only catches a hang


def in_gui_thread() -> bool:
    app = QtCore.QCoreApplication.instance()
    assert app is not None
    return (
        threading.current_thread() is threading.main_thread()
        and QtCore.QThread.currentThread() == app.thread()
    )


@pytest.fixture(autouse=True)
def collect_garbage_here():
    """Free the test's QObjects caught in reference cycles (pytest.raises
    keeps frames alive) in the GUI thread, before a framerpc thread's
    allocation runs the garbage collector there: Qt objects must be freed
    in their own thread."""
    yield
    gc.collect()


@pytest.fixture
def runner(qtbot):
    made = CallRunner()
    yield made
    made.close()


# -- signals ---------------------------------------------------------------------


def test_remote_signals_arrive_in_the_gui_thread(qtbot, tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    signals = QtSignals(proxy)
    try:
        assert set(signals.names) == {"frame_ready", "mode_changed", "pair_ready"}
        received: list[tuple[str, tuple, bool]] = []
        slotted: list[tuple[tuple, bool]] = []
        signals.received.connect(
            lambda name, args: received.append((name, args, in_gui_thread()))
        )
        signals.connect_slot(
            "pair_ready", lambda *a: slotted.append((a, in_gui_thread()))
        )
        assert proxy.emit_pair(7, "seven") is None
        proxy.mode = "hdr"  # the notify signal of an auto_notify property
        qtbot.waitUntil(lambda: len(received) >= 2 and bool(slotted), timeout=WAIT_MS)
        assert ("pair_ready", ((7, "seven"),), True) in received
        assert ("mode_changed", ("hdr",), True) in received
        assert slotted == [(((7, "seven"),), True)]
    finally:
        signals.close()
    # closed: disconnected from the proxy's signals, nothing more forwarded
    assert all(not proxy._signals[n].connections for n in signals.names)


def test_signal_names_are_checked(qtbot, tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    with pytest.raises(KeyError, match="nope"):
        QtSignals(proxy, names=["frame_ready", "nope"])
    signals = QtSignals(proxy, names=["mode_changed"])
    try:
        assert signals.names == ["mode_changed"]
        with pytest.raises(KeyError):
            signals.connect_slot("frame_ready", print)
        with pytest.raises(TypeError):
            signals.connect_slot("mode_changed", 3)  # type: ignore[arg-type]
    finally:
        signals.close()


def test_a_failing_slot_does_not_stop_the_others(qtbot, tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    signals = QtSignals(proxy, names=["mode_changed"])
    seen: list[str] = []

    def broken(mode: str) -> None:
        raise ValueError("slot bug")

    try:
        signals.connect_slot("mode_changed", broken)
        signals.connect_slot("mode_changed", seen.append)
        proxy.mode = "fast"
        qtbot.waitUntil(lambda: seen == ["fast"], timeout=WAIT_MS)
        signals.disconnect_slot("mode_changed", broken)
        with pytest.raises(ValueError):
            signals.disconnect_slot("mode_changed", broken)
    finally:
        signals.close()


# -- calls -----------------------------------------------------------------------


def test_call_outcomes_arrive_in_the_gui_thread(qtbot, tcp_camera, connect, runner):
    proxy = connect(tcp_camera.url)
    worker_threads: list[threading.Thread] = []

    def add_elsewhere(a: int, b: int) -> int:
        worker_threads.append(threading.current_thread())
        return proxy.add(a, b)

    future = runner.submit(add_elsewhere, 2, 3)
    outcome: list[tuple[str, object, bool]] = []
    future.succeeded.connect(lambda v: outcome.append(("ok", v, in_gui_thread())))
    future.failed.connect(lambda e: outcome.append(("error", e, in_gui_thread())))
    future.add_done_callback(lambda f: outcome.append(("done", f, in_gui_thread())))
    with qtbot.waitSignal(future.finished, timeout=WAIT_MS):
        pass
    assert outcome == [("ok", 5, True), ("done", future, True)]
    assert worker_threads and worker_threads[0] is not threading.main_thread()
    assert future.done() and future.delivered() and future.result(0) == 5
    assert runner.pending == 0
    # a callback added after delivery runs at once
    late: list[object] = []
    future.add_done_callback(late.append)
    assert late == [future]


def test_a_call_does_not_block_the_gui_thread(qtbot, runner):
    # The call waits for an event that only the GUI thread's event loop
    # sets: if submit() ran it in the GUI thread, it would time out (False).
    released = threading.Event()
    future = runner.submit(released.wait, 30)
    QtCore.QTimer.singleShot(0, released.set)
    qtbot.waitUntil(future.delivered, timeout=WAIT_MS)
    assert future.result(0) is True


def test_remote_errors_arrive_as_errors(qtbot, tcp_camera, connect, runner, ctx):
    plain = connect(tcp_camera.url)  # returns NoResult on a remote failure
    typed = framerpc.connect(type(tcp_camera).__mro__[1], ctx, tcp_camera.url)
    try:
        futures = {
            "no-result": runner.submit(plain.fail, "boom"),
            "raised": runner.submit(typed.fail, "bang"),
            "property": runner.set_property(plain, "gain", -1),
            "local": runner.submit(int, "not a number"),
        }
        errors: dict[str, tuple[BaseException, bool]] = {}
        values: list[object] = []
        for key, future in futures.items():
            future.failed.connect(
                functools.partial(
                    lambda k, e: errors.__setitem__(k, (e, in_gui_thread())), key
                )
            )
            future.succeeded.connect(values.append)
        qtbot.waitUntil(lambda: len(errors) + len(values) == 4, timeout=WAIT_MS)
        assert values == []
        assert all(gui for _, gui in errors.values())
        for key, text in [("no-result", "boom"), ("raised", "bang")]:
            error = errors[key][0]
            assert isinstance(error, framerpc.RemoteError)
            assert (error.remote_type, error.message) == ("ValueError", text)
        assert isinstance(errors["property"][0], framerpc.RemoteError)
        assert "gain must be >= 0" in str(errors["property"][0])
        assert isinstance(errors["local"][0], ValueError)
        with pytest.raises(framerpc.RemoteError):
            futures["no-result"].result(0)
        # the property get works through the same path
        good = runner.get_property(plain, "gain")
        qtbot.waitUntil(good.delivered, timeout=WAIT_MS)
        assert good.result(0) == tcp_camera.gain
    finally:
        typed.close()  # type: ignore[attr-defined]


def test_a_failed_call_leaves_its_caller_out_of_reference_cycles(qtbot, runner):
    # A window keeps the future of its call, and the call is one of its
    # methods: the exception's traceback must not hold the method's frame
    # (self), or the window sits in a cycle only the garbage collector
    # frees, on whichever thread it happens to run.
    class Window(QtCore.QObject):
        def fail(self) -> None:
            raise ValueError("no such camera")

    window = Window()
    window.call = runner.submit(window.fail)
    qtbot.waitUntil(window.call.delivered, timeout=WAIT_MS)
    error = window.call.exception(0)
    assert isinstance(error, ValueError)
    assert error.__traceback__ is None
    assert 'in fail\n    raise ValueError("no such camera")' in error.__notes__[0]
    assert "no such camera" in "".join(traceback.format_exception(error))
    del error
    alive = weakref.ref(window)
    del window
    assert alive() is None  # freed at once, by reference counting


def test_a_cancelled_call_fails_with_cancelled_error(qtbot):
    runner = CallRunner(max_workers=1)
    started, release = threading.Event(), threading.Event()

    def hold() -> str:
        started.set()
        release.wait(30)
        return "held"

    try:
        first = runner.submit(hold)
        second = runner.submit(str, "never")
        assert started.wait(20)
        assert second.cancel()
        release.set()
        qtbot.waitUntil(
            lambda: first.delivered() and second.delivered(), timeout=WAIT_MS
        )
        assert first.result(0) == "held"
        assert isinstance(second.exception(0), concurrent.futures.CancelledError)
    finally:
        release.set()
        runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(str, 1)


def test_close_cancels_calls_not_started_and_joins_the_workers(qtbot):
    runner = CallRunner(max_workers=1)
    started, release = threading.Event(), threading.Event()
    first = runner.submit(lambda: started.set() or release.wait(30))
    queued = runner.submit(str, "never")
    assert started.wait(20)
    threading.Timer(0.05, release.set).start()  # the running call may end
    closer = threading.Thread(target=runner.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive()
    qtbot.waitUntil(lambda: first.delivered() and queued.delivered(), timeout=WAIT_MS)
    assert first.result(0) is True
    assert isinstance(queued.exception(0), concurrent.futures.CancelledError)
    assert not [t for t in threading.enumerate() if t.name.startswith("framerpc-qt")]


# -- frames ----------------------------------------------------------------------


def test_frames_arrive_in_the_gui_thread(qtbot, tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    pump = FramePump(functools.partial(proxy.grab, [40, 30, 3], "uint16"))
    frames: list[tuple[object, bool]] = []
    pump.frame.connect(lambda value: frames.append((value, in_gui_thread())))
    pump.start()
    try:
        qtbot.waitUntil(lambda: len(frames) >= 5, timeout=WAIT_MS)
    finally:
        pump.stop()
    assert not pump.running
    assert pump.count >= 5
    for (array, info), gui in frames:
        assert gui
        assert array.shape == (40, 30, 3) and str(array.dtype) == "uint16"
        assert info == {"shape": [40, 30, 3], "dtype": "uint16"}
    with pytest.raises(RuntimeError):
        pump.start()


def test_the_pump_holds_at_most_one_frame_for_a_slow_gui(qtbot):
    # Each grab checks that the pump never runs far ahead of the GUI: at
    # most the frame being grabbed, one handed over and one the GUI has
    # taken but not yet passed to its slots.
    calls = 0
    too_far: list[tuple[int, int]] = []
    delivered: list[int] = []

    def grab() -> int:
        nonlocal calls
        calls += 1
        if calls - len(delivered) > 3:
            too_far.append((calls, len(delivered)))
        return calls

    pump = FramePump(grab)
    pump.frame.connect(delivered.append)
    pump.start()
    try:
        # the GUI processes no events here: the pump must park after 2 grabs
        assert wait_until(lambda: calls >= 2)
        assert not wait_until(lambda: calls > 2, timeout=0.5)
        qtbot.waitUntil(lambda: len(delivered) >= 20, timeout=WAIT_MS)
    finally:
        pump.stop()
    assert too_far == []
    assert delivered[:20] == list(range(1, 21))  # in order, none skipped


def test_grab_errors_arrive_as_errors_and_the_pump_goes_on(qtbot):
    attempts = 0

    def flaky() -> object:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise TimeoutError("no frame")
        if attempts == 2:
            return framerpc.NoResult("ValueError: bad kind", "tb")
        return attempts

    pump = FramePump(flaky, retry_interval=0.01)
    errors: list[tuple[BaseException, bool]] = []
    frames: list[object] = []
    pump.error.connect(lambda e: errors.append((e, in_gui_thread())))
    pump.frame.connect(frames.append)
    pump.start()
    try:
        qtbot.waitUntil(lambda: bool(frames), timeout=WAIT_MS)
    finally:
        pump.stop()
    assert [type(e) for e, _ in errors] == [TimeoutError, framerpc.RemoteError]
    assert all(gui for _, gui in errors)
    assert errors[1][0].message == "bad kind"
    assert frames[0] == 3


def test_many_emissions_keep_the_interpreter_alive(qtbot):
    # PySide6 6.12.0 takes a reference from True at each emit(): on Python
    # 3.11 some thousand emissions abort the interpreter. framerpc.qt gives
    # the reference back; True's count must not fall with the emissions.
    from framerpc.qt._compat import emit

    pump = FramePump(int)
    before = sys.getrefcount(True)
    for _ in range(20_000):
        emit(pump.frame, 1)
    assert sys.getrefcount(True) > before - 1_000
