"""Tests for framerpc.signal.RPCSignal."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from framerpc.signal import RPCSignal, bound_signal


class Recorder:
    """Listener object whose bound method records its calls."""

    def __init__(self, log: list[Any] | None = None, tag: str = "") -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.log = log
        self.tag = tag

    def on_signal(self, *args: Any) -> None:
        self.calls.append(args)
        if self.log is not None:
            self.log.append(self.tag)


class Camera:
    frame_ready = RPCSignal(int)
    stopped = RPCSignal()


class Slotted:
    __slots__ = ()
    frame_ready = RPCSignal(int)


def test_emit_calls_connections_in_order_with_args() -> None:
    signal = RPCSignal(int, str)
    log: list[Any] = []
    signal.connect(lambda n, s: log.append(("first", n, s)))
    signal.connect(lambda n, s: log.append(("second", n, s)))
    signal.emit(1, "a")
    assert log == [("first", 1, "a"), ("second", 1, "a")]


def test_connect_ignores_duplicates() -> None:
    signal = RPCSignal()
    recorder = Recorder()
    signal.connect(recorder.on_signal)
    signal.connect(recorder.on_signal)  # a new but equal bound method
    signal.connect(weakref.WeakMethod(recorder.on_signal))
    assert len(signal.connections) == 1
    signal.emit()
    assert recorder.calls == [()]


def test_connect_rejects_non_callable() -> None:
    signal = RPCSignal()
    with pytest.raises(TypeError, match="non-callable"):
        signal.connect(42)  # type: ignore[arg-type]
    assert signal.connections == []


def test_disconnect_removes_only_that_connection() -> None:
    signal = RPCSignal(int)
    first, second = Recorder(), Recorder()
    signal.connect(first.on_signal)
    signal.connect(second.on_signal)
    signal.disconnect(first.on_signal)
    signal.emit(5)
    assert first.calls == []
    assert second.calls == [(5,)]


def test_disconnect_matches_weak_method_by_referent() -> None:
    signal = RPCSignal()
    recorder = Recorder()
    signal.connect(weakref.WeakMethod(recorder.on_signal))
    signal.disconnect(recorder.on_signal)
    assert signal.connections == []


def test_disconnect_unknown_raises_value_error() -> None:
    signal = RPCSignal()
    signal.connect(print)
    with pytest.raises(ValueError, match="not connected"):
        signal.disconnect(len)
    assert signal.connections == [print]


def test_disconnect_without_argument_clears_all() -> None:
    signal = RPCSignal()
    recorder = Recorder()
    signal.connect(recorder.on_signal)
    signal.connect(print)
    signal.disconnect()
    assert signal.connections == []
    signal.emit()
    assert recorder.calls == []


def test_weak_method_is_called_while_alive_and_pruned_after() -> None:
    signal = RPCSignal(int)
    recorder = Recorder()
    ref = weakref.WeakMethod(recorder.on_signal)
    signal.connect(ref)
    assert signal.connections == [ref]  # stored as given
    signal.emit(1)
    assert recorder.calls == [(1,)]
    calls = recorder.calls
    del recorder
    gc.collect()
    signal.emit(2)
    assert calls == [(1,)]
    assert signal.connections == []


def test_listener_exception_propagates() -> None:
    signal = RPCSignal()
    after: list[int] = []

    def boom() -> None:
        raise KeyError("listener failed")

    signal.connect(boom)
    signal.connect(lambda: after.append(1))
    with pytest.raises(KeyError, match="listener failed"):
        signal.emit()
    assert after == []


def test_listener_may_change_connections_during_emit() -> None:
    signal = RPCSignal()
    log: list[str] = []

    def late() -> None:
        log.append("late")

    def first() -> None:
        log.append("first")
        signal.disconnect(first)
        signal.connect(late)

    signal.connect(first)
    signal.emit()
    assert log == ["first"]  # the change applies from the next emit on
    signal.emit()
    assert log == ["first", "late"]


def test_validate_args_wrong_count_is_runtime_error() -> None:
    with pytest.raises(
        RuntimeError, match=r"frame_ready expects 1 argument\(s\), got 2"
    ):
        Camera.frame_ready.validate_args(1, 2)


@pytest.mark.parametrize(
    ("arg_type", "value"),
    [
        (int, 3),
        (int | None, None),
        (int | None, 4),
        (list[float], [1.0, 2.5]),
        (dict[str, int], {"a": 1}),
        (Any, object()),
        (tuple[int, str], (1, "a")),
        (np.ndarray, np.zeros(2)),
        (npt.NDArray[np.uint8], np.zeros(2, dtype=np.uint8)),
    ],
)
def test_validate_args_accepts_matching_values_unchanged(
    arg_type: Any, value: Any
) -> None:
    (result,) = RPCSignal(arg_type).validate_args(value)
    assert result is value


@pytest.mark.parametrize(
    ("arg_type", "value", "got"),
    [
        (int, "3", "str"),
        (int | None, 2.5, "float"),
        (list[float], [1.0, "x"], "list"),
        (dict[str, int], {"a": "1"}, "dict"),
        (tuple[int, str], [1, "a"], "list"),
        (npt.NDArray[np.uint8], np.zeros(2), "ndarray"),
    ],
)
def test_validate_args_type_error_names_index_and_types(
    arg_type: Any, value: Any, got: str
) -> None:
    signal = RPCSignal(str, arg_type)
    with pytest.raises(TypeError, match=f"argument 1: expected .*, got {got}"):
        signal.validate_args("ok", value)


def test_validate_args_coerces_wire_values() -> None:
    assert RPCSignal(tuple[int, str]).validate_args([1, "a"], coerce=True) == (
        (1, "a"),
    )
    assert RPCSignal(int, list[float]).validate_args("3", [1, "2"], coerce=True) == (
        3,
        [1.0, 2.0],
    )
    (array,) = RPCSignal(npt.NDArray[np.uint8]).validate_args([[1, 2]], coerce=True)
    assert array.dtype == np.uint8
    assert array.tolist() == [[1, 2]]


def test_validate_args_failed_coercion_names_index() -> None:
    with pytest.raises(TypeError, match="frame_ready argument 0: cannot coerce"):
        Camera.frame_ready.validate_args("x", coerce=True)


def test_class_access_returns_class_signal_with_name() -> None:
    assert isinstance(Camera.__dict__["frame_ready"], RPCSignal)
    assert Camera.frame_ready is Camera.__dict__["frame_ready"]
    assert Camera.frame_ready.name == "frame_ready"
    assert RPCSignal(int).name is None


def test_each_instance_has_its_own_signal() -> None:
    one, two = Camera(), Camera()
    signal = one.frame_ready
    assert signal is not Camera.frame_ready
    assert signal is not two.frame_ready
    assert one.frame_ready is signal  # created once, then found in __dict__
    assert one.__dict__["frame_ready"] is signal
    assert bound_signal(Camera.frame_ready, one) is signal
    assert signal.name == "frame_ready"
    assert signal.arg_types == (int,)

    recorder = Recorder()
    one.frame_ready.connect(recorder.on_signal)
    two.frame_ready.emit(2)
    Camera.frame_ready.emit(3)
    one.frame_ready.emit(1)
    assert recorder.calls == [(1,)]
    assert two.frame_ready.connections == []
    assert Camera.frame_ready.connections == []


def test_instance_without_dict_uses_class_signal() -> None:
    assert Slotted().frame_ready is Slotted.frame_ready


def test_repr_is_short_and_informative() -> None:
    camera = Camera()
    camera.frame_ready.connect(print)
    camera.frame_ready.connect(len)
    assert repr(camera.frame_ready) == "<RPCSignal frame_ready(int) with 2 connections>"
    assert repr(Camera.stopped) == "<RPCSignal stopped() with 0 connections>"


def test_concurrent_connects_while_emitting() -> None:
    signal = RPCSignal(int)
    recorders = [Recorder() for _ in range(40)]
    stop = threading.Event()
    errors: list[Exception] = []

    def emit_loop() -> None:
        try:
            while not stop.is_set():
                signal.emit(0)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    def connect_all(group: list[Recorder]) -> None:
        for recorder in group:
            signal.connect(recorder.on_signal)

    emitter = threading.Thread(target=emit_loop)
    emitter.start()
    connectors = [
        threading.Thread(target=connect_all, args=(recorders[i::4],)) for i in range(4)
    ]
    for thread in connectors:
        thread.start()
    for thread in connectors:
        thread.join(timeout=10)
    stop.set()
    emitter.join(timeout=10)
    assert not emitter.is_alive()
    assert errors == []
    assert len(signal.connections) == len(recorders)
    signal.emit(7)
    assert all(r.calls[-1] == (7,) for r in recorders)


def test_concurrent_first_access_yields_one_instance_signal() -> None:
    camera = Camera()
    barrier = threading.Barrier(8)
    seen: list[RPCSignal] = []

    def grab() -> None:
        barrier.wait(timeout=10)
        seen.append(bound_signal(Camera.frame_ready, camera))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(seen) == 8
    assert all(s is camera.frame_ready for s in seen)
