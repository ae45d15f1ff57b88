"""Tests for framerpc.property.RPCProperty."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from framerpc.property import RPCProperty
from framerpc.signal import RPCSignal


class Camera:
    exposure_changed = RPCSignal(float)
    gain_changed = RPCSignal(int)
    frame_changed = RPCSignal(np.ndarray)

    def __init__(self) -> None:
        self._exposure = 1.0
        self._gain = 0
        self._frame: Any = None
        self._name = "cam"

    @RPCProperty(notify=exposure_changed, auto_notify=True)
    def exposure(self) -> float:
        """Exposure time in seconds."""
        return self._exposure

    @exposure.setter
    def exposure(self, value: float) -> None:
        # Stores a normalised value: the emission must carry what fget returns.
        self._exposure = round(float(value), 3)

    @RPCProperty(notify=gain_changed)
    def gain(self) -> int:
        return self._gain

    @gain.setter
    def gain(self, value: int) -> None:
        self._gain = value
        self.gain_changed.emit(value)  # manual notification

    @RPCProperty(notify=frame_changed, auto_notify=True)
    def frame(self) -> Any:
        return self._frame

    @frame.setter
    def frame(self, value: Any) -> None:
        self._frame = value

    @RPCProperty
    def name(self) -> str:
        """Camera name."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @name.deleter
    def name(self) -> None:
        self._name = ""


def record(signal: RPCSignal) -> list[Any]:
    """Connect a recorder to `signal` and return the list it fills."""
    calls: list[Any] = []
    signal.connect(lambda *args: calls.append(args))
    return calls


def test_is_a_property_and_plain_get_set_delete_work() -> None:
    assert isinstance(Camera.__dict__["name"], property)
    assert isinstance(Camera.__dict__["name"], RPCProperty)
    camera = Camera()
    assert camera.name == "cam"
    camera.name = "left"
    assert camera.name == "left"
    del camera.name
    assert camera.name == ""


def test_class_access_returns_the_property() -> None:
    assert Camera.exposure is Camera.__dict__["exposure"]


def test_read_only_property_refuses_set() -> None:
    class Thing:
        value = RPCProperty(lambda self: 1)

    with pytest.raises(AttributeError):
        Thing().value = 2  # type: ignore[misc]


def test_auto_notify_emits_new_value_only_on_change() -> None:
    camera = Camera()
    calls = record(camera.exposure_changed)
    camera.exposure = 2.0004  # stored as 2.0: the getter's value is emitted
    assert calls == [(2.0,)]
    camera.exposure = 2.0001  # same stored value: no emission
    assert calls == [(2.0,)]
    camera.exposure = 3
    assert calls == [(2.0,), (3.0,)]
    assert camera.exposure == 3.0


def test_notify_without_auto_notify_leaves_emitting_to_the_setter() -> None:
    camera = Camera()
    calls = record(camera.gain_changed)
    camera.gain = 5
    camera.gain = 5  # the setter emits every time, the property adds nothing
    assert calls == [(5,), (5,)]


def test_notify_alone_does_not_emit() -> None:
    changed = RPCSignal(int)

    class Thing:
        changed_signal = changed

        def __init__(self) -> None:
            self._value = 0

        def _get(self) -> int:
            return self._value

        def _set(self, value: int) -> None:
            self._value = value

        value = RPCProperty(_get, _set, notify=changed)

    thing = Thing()
    calls = record(thing.changed_signal)
    class_calls = record(changed)
    thing.value = 4
    assert thing.value == 4
    assert calls == []
    assert class_calls == []


def test_emission_goes_to_the_instance_signal_only() -> None:
    one, two = Camera(), Camera()
    calls_one = record(one.exposure_changed)
    calls_two = record(two.exposure_changed)
    calls_class = record(Camera.exposure_changed)
    try:
        one.exposure = 5.0
        assert calls_one == [(5.0,)]
        assert calls_two == []
        assert calls_class == []
    finally:
        Camera.exposure_changed.disconnect()


def test_numpy_values_do_not_break_the_change_check() -> None:
    camera = Camera()
    calls = record(camera.frame_changed)
    first = np.zeros(4)
    camera.frame = first  # None -> array
    camera.frame = first  # same object: unchanged
    camera.frame = np.ones(4)  # elementwise comparison is ambiguous: changed
    camera.frame = np.ones(3)  # shape mismatch cannot be compared: changed
    assert len(calls) == 3
    assert calls[0][0] is first
    assert calls[2][0].shape == (3,)


def test_decorator_forms_and_options() -> None:
    prop = Camera.__dict__["exposure"]
    assert prop.notify is Camera.exposure_changed
    assert prop.auto_notify is True
    assert prop.fget is not None
    assert prop.fset is not None
    gain = Camera.__dict__["gain"]
    assert gain.notify is Camera.gain_changed
    assert gain.auto_notify is False
    name = Camera.__dict__["name"]
    assert name.notify is None
    assert name.auto_notify is False


def test_getter_setter_deleter_keep_notify_and_auto_notify() -> None:
    signal = RPCSignal(int)
    base = RPCProperty(lambda self: 1, notify=signal, auto_notify=True)
    copies = [
        base.getter(lambda self: 2),
        base.setter(lambda self, value: None),
        base.deleter(lambda self: None),
    ]
    for copy in copies:
        assert type(copy) is RPCProperty
        assert copy is not base
        assert copy.notify is signal
        assert copy.auto_notify is True
    assert copies[0].fget(None) == 2
    assert copies[1].fset is not None
    assert copies[1].fget is base.fget
    assert copies[2].fdel is not None


def test_empty_property_and_factory_call() -> None:
    empty = RPCProperty()
    assert empty.fget is None
    assert empty.notify is None
    assert empty.__doc__ is None

    def getter(self: Any) -> int:
        """The answer."""
        return 42

    made = empty(getter)
    assert made.fget is getter
    assert made.__doc__ == "The answer."
    with pytest.raises(TypeError, match="already has a getter"):
        made(getter)


def test_doc_defaults_to_getter_doc_and_explicit_doc_wins() -> None:
    assert Camera.__dict__["exposure"].__doc__ == "Exposure time in seconds."
    assert Camera.__dict__["name"].__doc__ == "Camera name."

    def getter(self: Any) -> int:
        """Getter doc."""
        return 0

    explicit = RPCProperty(getter, doc="Explicit.")
    assert explicit.__doc__ == "Explicit."
    assert explicit.setter(lambda self, value: None).__doc__ == "Explicit."

    def other(self: Any) -> int:
        """Other doc."""
        return 1

    assert RPCProperty(getter).getter(other).__doc__ == "Other doc."


def test_auto_notify_without_getter_emits_the_set_value() -> None:
    class Sink:
        changed = RPCSignal(int)
        store = RPCProperty(
            fset=lambda self, value: None, notify=changed, auto_notify=True
        )

    sink = Sink()
    calls = record(sink.changed)
    sink.store = 3
    sink.store = 3  # the old value cannot be read, so every set is a change
    assert calls == [(3,), (3,)]


def test_auto_notify_first_set_before_the_attribute_exists() -> None:
    class Lazy:
        changed = RPCSignal(int)

        def __init__(self) -> None:
            self.value = 1  # the getter cannot read the old value yet

        @RPCProperty(notify=changed, auto_notify=True)
        def value(self) -> int:
            return self._value

        @value.setter
        def value(self, new: int) -> None:
            self._value = new

    lazy = Lazy()
    calls = record(lazy.changed)
    lazy.value = 2
    assert calls == [(2,)]
