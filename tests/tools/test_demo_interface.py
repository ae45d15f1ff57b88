"""The demo's ``Camera`` interface (framerpc.demo) stays the one users
subclassed: ``grab_pooled`` lives in ``PooledCamera``, which the demo camera
and its proxy implement, so a camera written with only ``grab``,
``frame_count`` and ``exposure`` instantiates and serves as before."""

from __future__ import annotations

import numpy as np
import zmq

from framerpc import RPCProperty, RPCServer, closing, connect
from framerpc.demo import Camera, CameraProxy, DemoCamera, PooledCamera


class OlderCamera(Camera, RPCServer):
    """A user's camera written against the interface before the pool."""

    def __init__(self, context: zmq.Context, url: str) -> None:
        self._exposure = 10
        RPCServer.__init__(self, context, url)

    @RPCServer.register_method_buffer(timeout=5000)
    def grab(self, kind: str = "uint16") -> tuple:
        return np.arange(6, dtype=np.uint16), {"kind": kind}

    @RPCServer.register_method_json
    def frame_count(self) -> int:
        return 7

    def _get_exposure(self) -> int:
        return self._exposure

    def _set_exposure(self, value: int) -> None:
        self._exposure = int(value)

    exposure = RPCProperty(_get_exposure, _set_exposure, notify=Camera.exposure_changed)


def test_a_camera_with_only_the_older_methods_instantiates_and_serves() -> None:
    ctx = zmq.Context()
    try:
        with OlderCamera(ctx, "tcp://127.0.0.1") as server:
            server.start()
            # typed as the interface it implements, and through the proxy
            with closing(connect(Camera, ctx, server.url)) as camera:
                frame, info = camera.grab("uint8")
                assert frame.tolist() == list(range(6)) and info == {"kind": "uint8"}
                camera.exposure = 25
                assert camera.exposure == 25
                assert camera.frame_count() == 7
            with CameraProxy(ctx, server.url) as proxy:
                assert proxy.frame_count() == 7
                # the pool path is the demo camera's: this one has none
                assert not proxy.grab_pooled()
    finally:
        ctx.term()


def test_the_demo_camera_and_its_proxy_offer_the_pool() -> None:
    assert issubclass(DemoCamera, PooledCamera) and issubclass(PooledCamera, Camera)
    assert issubclass(CameraProxy, PooledCamera)
    assert "grab_pooled" not in Camera.__abstractmethods__
    assert Camera.__abstractmethods__ == {"grab", "frame_count"}
