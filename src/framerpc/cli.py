"""The ``framerpc`` command: demo, registry, device listing, CURVE keys, bench."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

import zmq

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(frames=args.frames)
    return 0


def _registry(args: argparse.Namespace) -> int:
    from . import sdnotify
    from .registry import DeviceRegistry

    context = zmq.Context()
    registry = DeviceRegistry(context, args.addr, port=args.port)
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    registry.start()
    print(f"registry listening at {registry.url} (Ctrl-C stops it)", flush=True)
    # Under systemd (Type=notify, WatchdogSec=): ready now, then a watchdog
    # kept alive only while the registry thread runs. A no-op otherwise.
    sdnotify.ready()
    watchdog = sdnotify.Watchdog()
    # Wake at a quarter of the interval so no half-interval tick is missed.
    wake_s = watchdog.period / 2 if watchdog.period is not None else None
    status = 0
    while not stopped.wait(wake_s if watchdog.enabled else None):
        if not registry.is_alive():
            print("error: the registry thread ended", file=sys.stderr)
            status = 1
            break
        watchdog.tick()
    sdnotify.stopping()
    registry.stop()
    registry.join(timeout=5)
    context.term()
    return status


def _list(args: argparse.Namespace) -> int:
    from .registry import list_devices

    context = zmq.Context()
    try:
        devices = list_devices(context, args.registry_url, timeout=args.timeout)
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        context.destroy(linger=0)
    for name, (device_type, address) in sorted(devices.items()):
        print(f"{name}\t{device_type}\t{address}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from .security import generate_keys

    try:
        public_file, secret_file = generate_keys(
            args.directory, args.name, overwrite=args.force
        )
    except (FileExistsError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"public key: {public_file}")
    print(f"secret key: {secret_file}")
    print(
        f"give {public_file.name} to the peers that must trust this key; "
        f"keep {secret_file.name} private"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framerpc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug lines")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="registry + camera + client on loopback")
    demo.add_argument("--frames", type=int, default=50, help="frames of each kind")
    demo.set_defaults(run=_demo)

    registry = commands.add_parser("registry", help="run a device registry")
    registry.add_argument("--addr", default="*", help="interface to bind (default *)")
    registry.add_argument("--port", default="5555", help="port (default 5555)")
    registry.set_defaults(run=_registry)

    listing = commands.add_parser("list", help="list a registry's devices")
    listing.add_argument("registry_url", help="e.g. tcp://127.0.0.1:5555")
    listing.add_argument("--timeout", type=int, default=1000, help="ms")
    listing.set_defaults(run=_list)

    keys = commands.add_parser(
        "keys", help="write a CURVE key pair (NAME.key, NAME.key_secret)"
    )
    keys.add_argument("directory", help="folder for the key files (created)")
    keys.add_argument("--name", default="framerpc", help="file base name")
    keys.add_argument("--force", action="store_true", help="replace existing keys")
    keys.set_defaults(run=_keys)

    # Listed for --help; main() hands its arguments to the runner untouched.
    commands.add_parser(
        "bench",
        help="framerpc vs raw pyzmq side by side (bench --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``framerpc`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .bench.run import main as bench

        return bench(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
