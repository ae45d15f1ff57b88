"""Old import path of ``framerpc.tools.demo`` (the demo camera rig),
kept so existing imports keep working."""

from .tools.demo import (
    DEVICE_TYPE as DEVICE_TYPE,
)
from .tools.demo import (
    FRAME_SHAPES as FRAME_SHAPES,
)
from .tools.demo import (
    Camera as Camera,
)
from .tools.demo import (
    CameraProxy as CameraProxy,
)
from .tools.demo import (
    DemoCamera as DemoCamera,
)
from .tools.demo import (
    PooledCamera as PooledCamera,
)
from .tools.demo import (
    fetch_frames as fetch_frames,
)
from .tools.demo import (
    run_demo as run_demo,
)

__all__ = [
    "DEVICE_TYPE",
    "FRAME_SHAPES",
    "Camera",
    "CameraProxy",
    "DemoCamera",
    "PooledCamera",
    "fetch_frames",
    "run_demo",
]
