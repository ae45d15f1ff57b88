"""A live Qt viewer of the demo camera: frames, exposure, signals.

    python examples/viewer.py --registry tcp://127.0.0.1:5555 --name demo-camera

Run a registry and examples/camera_server.py first. Needs Qt:
``pip install "framerpc[qt]"`` (qtpy and PySide6; PyQt6 works too).

Threads: every blocking call (the registry lookup, connecting, property
get/set) runs on a framerpc.qt.CallRunner worker; frames come from a
framerpc.qt.FramePump on its own thread and proxy; signals arrive through
framerpc.qt.QtSignals. All of them hand their results to the GUI thread,
which only draws.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import zmq
from qtpy import QtCore, QtGui, QtWidgets

from framerpc import RPCClient, connect, list_devices
from framerpc.demo import Camera
from framerpc.qt import CallRunner, FramePump, QtFuture, QtSignals

MAX_SIGNAL_LINES = 200  # the list keeps the latest lines only
#: Longest wait (s) at closing for a grab in flight: ``grab`` has no timeout,
#: so closing its proxy is what ends a grab that takes longer.
PUMP_STOP_S = 0.5


def to_rgb8(frame: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A displayable 8-bit RGB copy: every other pixel, scaled to its maximum."""
    small = frame[::2, ::2]  # a quarter of the pixels to convert
    top = float(small.max()) or 1.0
    return np.ascontiguousarray(small * (255.0 / top), dtype=np.uint8)


class FrameView(QtWidgets.QWidget):
    """Draws the latest frame, scaled to fit and keeping its aspect ratio."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QtGui.QImage | None = None
        self._pixels: npt.NDArray[np.uint8] | None = None  # backs the QImage
        self.setMinimumSize(300, 300)

    def show_frame(self, frame: npt.NDArray[Any]) -> None:
        rgb = to_rgb8(frame)
        height, width = rgb.shape[:2]
        self._pixels = rgb
        self._image = QtGui.QImage(
            rgb.data, width, height, 3 * width, QtGui.QImage.Format.Format_RGB888
        )
        self.update()

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(400, 600)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), QtGui.QColor("black"))
        if self._image is not None:
            size = self._image.size().scaled(
                self.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio
            )
            target = QtCore.QRect(QtCore.QPoint(0, 0), size)
            target.moveCenter(self.rect().center())
            painter.drawImage(target, self._image)
        painter.end()


class ViewerWindow(QtWidgets.QWidget):
    """Find a camera by name through the registry and show it live.

    ``start()`` looks it up and connects (off the GUI thread); closing the
    window (or ``shutdown()``) stops the frame pump, the signal bridge and
    the call runner, joins their threads and closes both proxies. The
    context stays the caller's to terminate.
    """

    def __init__(self, context: zmq.Context[Any], registry: str, name: str) -> None:
        super().__init__()
        self.setWindowTitle(f"framerpc viewer: {name}")
        self._context, self._registry, self._name = context, registry, name
        self._runner = CallRunner()
        self._opening: QtFuture | None = None
        self._control: Camera | None = None  # properties and signals
        self._frames: Camera | None = None  # grabs only, on the pump's thread
        self._signals: QtSignals | None = None
        self._pump: FramePump | None = None
        self._last_rate_shown = 0.0
        self._shut = False

        self.view = FrameView()
        self.status = QtWidgets.QLabel(f"looking up {name!r} in {registry}...")
        self.status.setWordWrap(True)
        self.rate_label = QtWidgets.QLabel("-- frames/s")
        self.info_label = QtWidgets.QLabel("no frame yet")
        self.exposure_spin = QtWidgets.QSpinBox()
        self.exposure_spin.setRange(1, 1_000_000)
        self.exposure_spin.setSuffix(" us")
        self.exposure_spin.setEnabled(False)
        self.apply_button = QtWidgets.QPushButton("Set exposure")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply_exposure)
        self.signal_list = QtWidgets.QListWidget()

        side = QtWidgets.QVBoxLayout()
        side.addWidget(self.status)
        side.addWidget(self.rate_label)
        side.addWidget(self.info_label)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.exposure_spin)
        row.addWidget(self.apply_button)
        side.addLayout(row)
        side.addWidget(QtWidgets.QLabel("Signals:"))
        side.addWidget(self.signal_list, 1)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addWidget(self.view, 2)
        layout.addLayout(side, 1)

    # -- connecting (worker thread, then GUI thread) -----------------------------
    def start(self) -> None:
        """Look the camera up and connect, off the GUI thread."""
        self._opening = self._runner.submit(self._open)
        self._opening.succeeded.connect(self._on_open)
        self._opening.failed.connect(self._on_error)

    def _open(self) -> tuple[str, Camera, Camera]:  # a runner worker
        devices = list_devices(self._context, self._registry)
        if self._name not in devices:
            raise LookupError(
                f"no device {self._name!r}; registry has {sorted(devices)}"
            )
        address = devices[self._name][1]
        control = connect(Camera, self._context, address)
        try:
            return address, control, connect(Camera, self._context, address)
        except BaseException:
            close_proxy(control)
            raise

    def _on_open(self, opened: tuple[str, Camera, Camera]) -> None:
        address, self._control, self._frames = opened
        if self._shut:  # closed while connecting
            self._close_proxies()
            return
        self.status.setText(f"{self._name!r} at {address}")
        self._signals = QtSignals(self._control)
        self._signals.received.connect(self._on_signal)
        self._signals.connect_slot("exposure_changed", self._show_exposure)
        self._pump = FramePump(functools.partial(self._frames.grab, "uint16"))
        self._pump.frame.connect(self._on_frame)
        self._pump.error.connect(self._on_error)
        self._pump.start()
        reading = self._runner.get_property(self._control, "exposure")
        reading.succeeded.connect(self._show_exposure)
        reading.failed.connect(self._on_error)

    # -- GUI thread --------------------------------------------------------------
    def _on_frame(self, grabbed: tuple[npt.NDArray[Any], dict[str, Any]]) -> None:
        frame, info = grabbed
        self.view.show_frame(frame)
        self.info_label.setText(
            f"frame {info.get('index')}: {frame.shape[1]}x{frame.shape[0]} "
            f"{frame.dtype}, exposure {info.get('exposure_us')} us"
        )
        now = time.monotonic()
        if self._pump is not None and now - self._last_rate_shown > 0.25:
            self._last_rate_shown = now
            self.rate_label.setText(f"{self._pump.rate:.1f} frames/s")

    def _on_signal(self, name: str, args: tuple[Any, ...]) -> None:
        stamp = time.strftime("%H:%M:%S")
        shown = ", ".join(map(repr, args))
        self.signal_list.addItem(f"{stamp} {name}({shown})")
        while self.signal_list.count() > MAX_SIGNAL_LINES:
            self.signal_list.takeItem(0)
        self.signal_list.scrollToBottom()

    def _show_exposure(self, value: int) -> None:
        self.exposure_spin.setValue(int(value))
        self.exposure_spin.setEnabled(True)
        self.apply_button.setEnabled(True)

    def _on_error(self, error: BaseException) -> None:
        self.status.setText(f"error: {type(error).__name__}: {error}")

    def apply_exposure(self) -> None:
        """Send the spin box's value to the camera (off the GUI thread)."""
        if self._control is None:
            return
        setting = self._runner.set_property(
            self._control, "exposure", self.exposure_spin.value()
        )
        setting.failed.connect(self._on_error)

    @property
    def frames_shown(self) -> int:
        """Frames drawn so far."""
        return 0 if self._pump is None else self._pump.count

    @property
    def frame_rate(self) -> float:
        """Frames drawn per second over about the last second."""
        return 0.0 if self._pump is None else self._pump.rate

    # -- shutdown ----------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop and join every thread, close both proxies; idempotent."""
        if self._shut:
            return
        self._shut = True
        if self._pump is not None:
            self._pump.stop(PUMP_STOP_S)  # bounded: a grab may never return
        if self._signals is not None:
            self._signals.close()
        delivered = self._control is not None
        # A property get/set in flight waits for a stalled server as long as
        # its proxy's timeout (for ever without one): closing the proxies
        # first ends it (and a grab) within 0.1 s, so the join is bounded.
        self._close_proxies()
        self._runner.close()  # waits for a lookup in flight (its own timeouts)
        opening = self._opening
        if not delivered and opening is not None and opening.done():
            if opening.exception(0) is None:  # connected, not yet delivered
                _, self._control, self._frames = opening.result(0)
                self._close_proxies()
        if self._pump is not None:
            self._pump.stop(PUMP_STOP_S)  # and its thread ends

    def _close_proxies(self) -> None:
        for proxy in (self._frames, self._control):
            if proxy is not None:
                close_proxy(proxy)
        self._frames = self._control = None

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)


def close_proxy(proxy: Camera) -> None:
    """Close a proxy typed as the interface (it is an RPCClient)."""
    cast(RPCClient, proxy).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", default="tcp://127.0.0.1:5555")
    parser.add_argument("--name", default="demo-camera")
    args = parser.parse_args()

    app = QtWidgets.QApplication(sys.argv[:1])
    context = zmq.Context()
    window = ViewerWindow(context, args.registry, args.name)
    window.resize(900, 650)
    window.show()
    window.start()
    try:
        code = app.exec()
    finally:
        window.shutdown()
        context.term()
    sys.exit(code)


if __name__ == "__main__":
    main()
