"""Run a device registry until Ctrl-C.

python examples/registry.py --port 5555
"""

import argparse
import threading

import zmq

from framerpc import DeviceRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument("--port", default="5555")
    args = parser.parse_args()

    context = zmq.Context()
    registry = DeviceRegistry(context, args.addr, port=args.port)
    registry.add_new_device_callback(lambda t, a, n: print(f"+ {n} ({t}) at {a}"))
    registry.add_device_removed_callback(lambda t, a, n: print(f"- {n} ({t}) at {a}"))
    registry.start()
    print(f"registry at {registry.url}; Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
        registry.join(timeout=5)
        context.term()


if __name__ == "__main__":
    main()
