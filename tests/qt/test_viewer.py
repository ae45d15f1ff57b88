"""examples/viewer.py in a real (offscreen) Qt window against a live camera.

A registry and the demo camera run on loopback; the viewer finds the
camera by name, shows frames, sets the exposure through its widgets and
lists signals. The window's screenshot goes to tmp_path, and to the path
in FRAMERPC_VIEWER_SCREENSHOT when set (docs/img/viewer.png is made so).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication
pytest.importorskip("pytestqt")
pytest.importorskip("qtpy")

from qtpy import QtCore, QtGui

from framerpc import RPCProperty, RPCServer, connect
from framerpc.demo import DEVICE_TYPE, DemoCamera

VIEWER = Path(__file__).resolve().parents[2] / "examples" / "viewer.py"
WAIT_MS = 30_000  # a ceiling that only catches a hang

pytestmark = pytest.mark.skipif(not VIEWER.exists(), reason="not a source checkout")


def load_viewer():
    spec = importlib.util.spec_from_file_location("framerpc_example_viewer", VIEWER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def collect_garbage_here():
    """Free QObjects left in reference cycles in the GUI thread (see
    tests/qt/test_qt.py), not on a framerpc thread that happens to run the
    garbage collector."""
    yield
    gc.collect()


@pytest.fixture
def camera(ctx, registry):
    server = DemoCamera(ctx, "tcp://127.0.0.1")
    with server:
        server.register_to_registry(DEVICE_TYPE, "viewer-test-camera", registry.url)
        server.start()
        yield server


def distinct_colours(image: QtGui.QImage, step: int = 7) -> int:
    return len(
        {
            image.pixel(x, y)
            for x in range(0, image.width(), step)
            for y in range(0, image.height(), step)
        }
    )


@pytest.mark.timeout(120)
def test_the_viewer_shows_frames_sets_the_exposure_and_lists_signals(
    qtbot, ctx, registry, camera, tmp_path
):
    viewer = load_viewer()
    window = viewer.ViewerWindow(ctx, registry.url, "viewer-test-camera")
    try:
        window.resize(900, 650)
        window.show()
        window.start()
        qtbot.waitUntil(lambda: window.frames_shown >= 10, timeout=WAIT_MS)
        qtbot.waitUntil(window.exposure_spin.isEnabled, timeout=WAIT_MS)
        assert window.exposure_spin.value() == camera.exposure == 1000
        assert "viewer-test-camera" in window.status.text()
        assert "1200x800" not in window.info_label.text()  # width x height
        assert "800x1200 uint16" in window.info_label.text()

        # the user types a new exposure and clicks the button
        spin = window.exposure_spin
        spin.lineEdit().selectAll()
        qtbot.keyClicks(spin.lineEdit(), "4321")
        assert spin.value() == 4321
        qtbot.mouseClick(window.apply_button, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: camera.exposure == 4321, timeout=WAIT_MS)

        # the server's notify signal comes back and is listed
        def listed(text: str) -> bool:
            items = [
                window.signal_list.item(i).text()
                for i in range(window.signal_list.count())
            ]
            return any(text in item for item in items)

        qtbot.waitUntil(lambda: listed("exposure_changed(4321)"), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: listed("frame_ready("), timeout=WAIT_MS)
        # frames grabbed after the change carry it in their info
        qtbot.waitUntil(
            lambda: "exposure 4321 us" in window.info_label.text(), timeout=WAIT_MS
        )
        qtbot.waitUntil(lambda: window.frame_rate > 0, timeout=WAIT_MS)
        assert window.rate_label.text().endswith("frames/s")
        assert window.rate_label.text() != "-- frames/s"

        # the frame is drawn: the view shows the camera's gradient
        view = window.view.grab().toImage()
        assert distinct_colours(view) > 20
        shot = window.grab()
        path = tmp_path / "viewer.png"
        assert shot.save(str(path), "PNG")
        assert path.stat().st_size > 10_000
        wanted = os.environ.get("FRAMERPC_VIEWER_SCREENSHOT")
        if wanted:
            assert shot.save(wanted, "PNG")
    finally:
        window.close()  # closeEvent: stops and joins every thread, closes proxies
    assert window._control is None and window._frames is None
    assert window._pump is not None and not window._pump.running


def test_the_viewer_reports_an_unknown_camera(qtbot, ctx, registry):
    viewer = load_viewer()
    window = viewer.ViewerWindow(ctx, registry.url, "no-such-camera")
    try:
        window.show()
        window.start()
        qtbot.waitUntil(
            lambda: window.status.text().startswith("error: LookupError"),
            timeout=WAIT_MS,
        )
        assert "no-such-camera" in window.status.text()
        assert not window.exposure_spin.isEnabled()
    finally:
        window.close()


def test_closing_while_connecting_closes_the_proxies(qtbot, ctx, registry, camera):
    viewer = load_viewer()
    window = viewer.ViewerWindow(ctx, registry.url, "viewer-test-camera")
    window.start()
    window.close()  # before the connection was delivered to the GUI thread
    assert window._control is None and window._frames is None
    assert window._pump is None


class _Stalling(DemoCamera):
    """A demo camera with a stall: once ``stall`` is set, ``_wait_stalled``
    waits for ``release`` (``gave_up`` tells it came no sooner than the
    ceiling)."""

    def __init__(self, *args, **kwargs) -> None:
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.gave_up = False  # the stall ended without release
        super().__init__(*args, **kwargs)

    def _wait_stalled(self) -> None:
        if self.stall.is_set():
            self.stalled.set()
            self.gave_up = not self.release.wait(WAIT_MS / 1000)


class StallingCamera(_Stalling):
    """A camera whose grabs stall (a method without a timeout: the client
    waits as long)."""

    @RPCServer.register_method_buffer(timeout=None)
    def grab(self, kind: str = "uint16") -> tuple:
        self._wait_stalled()
        return DemoCamera.grab(self, kind)


def test_closing_during_a_grab_that_never_returns(qtbot, ctx, registry):
    server = StallingCamera(ctx, "tcp://127.0.0.1")
    with server:
        server.register_to_registry(DEVICE_TYPE, "stalling-camera", registry.url)
        server.start()
        viewer = load_viewer()
        window = viewer.ViewerWindow(ctx, registry.url, "stalling-camera")
        try:
            window.show()
            window.start()
            qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=WAIT_MS)
            qtbot.waitUntil(window.exposure_spin.isEnabled, timeout=WAIT_MS)
            server.stall.set()
            # the GUI must take frames for the pump to grab again
            qtbot.waitUntil(server.stalled.is_set, timeout=WAIT_MS)
            # the grab in flight never returns by itself: closing must not
            # wait for it (it waited for ever)
            window.close()
            assert not server.gave_up  # close() did not wait for the stall
            assert window._frames is None and not window._pump.running
        finally:
            server.release.set()
            window.close()


class StallingSetCamera(_Stalling):
    """A camera whose exposure setter stalls (the server answers that set
    no sooner)."""

    def _set_stalling(self, value: int) -> None:
        self._wait_stalled()
        DemoCamera._set_exposure(self, value)

    exposure = RPCProperty(
        DemoCamera._get_exposure,
        _set_stalling,
        doc="Exposure (us).",
        notify=DemoCamera.exposure_changed,
    )


@pytest.mark.timeout(120)
def test_closing_during_a_property_set_that_never_returns(
    qtbot, ctx, registry, monkeypatch
):
    server = StallingSetCamera(ctx, "tcp://127.0.0.1")
    with server:
        server.register_to_registry(DEVICE_TYPE, "stalling-set-camera", registry.url)
        server.start()
        viewer = load_viewer()
        # proxies without a call timeout, as a user may make them: the set
        # in flight then waits for the server as long as it takes
        monkeypatch.setattr(viewer, "connect", functools.partial(connect, timeout=None))
        window = viewer.ViewerWindow(ctx, registry.url, "stalling-set-camera")
        try:
            window.show()
            window.start()
            qtbot.waitUntil(window.exposure_spin.isEnabled, timeout=WAIT_MS)
            server.stall.set()
            window.exposure_spin.setValue(2000)
            qtbot.mouseClick(window.apply_button, QtCore.Qt.MouseButton.LeftButton)
            qtbot.waitUntil(server.stalled.is_set, timeout=WAIT_MS)
            # closing must not wait for the set's answer (it waited until
            # the server gave up)
            window.close()
            assert not server.gave_up
            assert window._control is None and window._frames is None
            assert not window._pump.running
        finally:
            server.release.set()
            window.close()
