"""Find the demo camera through the registry and fetch frames.

python examples/camera_client.py --registry tcp://127.0.0.1:5555
"""

import argparse

import zmq

from framerpc import closing, connect, list_devices
from framerpc.demo import FRAME_SHAPES, Camera, fetch_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", default="tcp://127.0.0.1:5555")
    parser.add_argument("--name", default="demo-camera")
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()

    context = zmq.Context()
    try:
        devices = list_devices(context, args.registry)
        if args.name not in devices:
            raise SystemExit(f"no device {args.name!r}; registry has {sorted(devices)}")
        _, address = devices[args.name]
        # connect(): typed as a Camera; a remote failure raises RemoteError
        with closing(connect(Camera, context, address)) as camera:
            camera.frame_ready.connect(lambda n: None)
            camera.exposure = 2000
            print(f"connected to {args.name!r}, exposure {camera.exposure} us")
            for kind in FRAME_SHAPES:
                rate, mbps = fetch_frames(camera, kind, args.frames)
                print(f"{kind:>6}: {rate:8.1f} frames/s {mbps:9.1f} MB/s")
    finally:
        context.term()


if __name__ == "__main__":
    main()
