"""Serve the demo camera and register it with a registry.

    python examples/camera_server.py --registry tcp://127.0.0.1:5555

The camera publishes 1200x800x3 uint16 and 2160x3840x3 uint8 frames through
its ``grab(kind)`` buffer method, emits ``frame_ready`` for each frame and
has an ``exposure`` property (see framerpc/demo.py for the class).
"""

import argparse
import sys

import zmq

from framerpc.demo import DEVICE_TYPE, DemoCamera


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", default="tcp://127.0.0.1:5555")
    parser.add_argument("--url", default="tcp://127.0.0.1", help="no port: free one")
    parser.add_argument("--name", default="demo-camera")
    args = parser.parse_args()

    context = zmq.Context()
    with DemoCamera(context, args.url) as camera:
        try:
            name = camera.register_to_registry(DEVICE_TYPE, args.name, args.registry)
        except (TimeoutError, RuntimeError) as exc:  # unreachable or refused
            sys.exit(f"error: cannot register with {args.registry}: {exc}")
        print(f"camera {name!r} at {camera.url}; Ctrl-C stops it")
        try:
            camera.serve_forever()
        except KeyboardInterrupt:
            pass  # leaving the block stops the camera and unregisters it
    context.term()


if __name__ == "__main__":
    main()
