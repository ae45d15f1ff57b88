"""The ``framerpc`` command: demo, registry, device listing, CURVE keys, bench,
and a device from the shell (inspect, call, get, set, watch).

A user error (bad URL, busy port, unreachable registry or device, unknown
device or member, timeout) prints one ``error:`` line and exits 1;
``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence

import zmq

from ..errors import FramerpcError
from .cli_device import CommandError, add_commands

__all__ = ["main"]

#: What a user's mistake or an absent peer raises: one line, no traceback.
_USER_ERRORS = (
    CommandError,
    FramerpcError,
    ValueError,
    TimeoutError,
    RuntimeError,
    OSError,
    zmq.ZMQError,
)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("framerpc")
    except metadata.PackageNotFoundError:  # run from a source tree
        from .. import __version__

        return __version__


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(frames=args.frames)
    return 0


def _registry(args: argparse.Namespace) -> int:
    from .. import sdnotify
    from ..registry import DeviceRegistry

    context = zmq.Context()
    try:
        registry = DeviceRegistry(context, args.addr, port=args.port)
    except zmq.ZMQError as exc:
        context.term()
        where = args.addr if "://" in args.addr else f"tcp://{args.addr}:{args.port}"
        raise CommandError(
            f"cannot bind a registry at {where}: {zmq.strerror(exc.errno or 0)} "
            "(another registry running? choose another --port)"
        ) from None
    except BaseException:
        context.term()
        raise
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    registry.start()
    for line in _bound_lines(registry.endpoint, registry.url, registry.port):
        print(line, flush=True)
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


def _bound_lines(endpoint: str, url: str, port: int | None) -> list[str]:
    """What ``framerpc registry`` prints: the address really bound, and
    where to connect when that is a wildcard (every interface)."""
    lines = [f"registry listening at {endpoint} (Ctrl-C stops it)"]
    if url != endpoint:
        lines.append(
            f"hint: that is every interface; connect to {url} on this machine, "
            f"tcp://{socket.gethostname()}:{port} from others"
        )
    return lines


def _list(args: argparse.Namespace) -> int:
    from ..registry import list_devices

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
    from ..transport.keys import generate_keys

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
    parser = argparse.ArgumentParser(
        prog="framerpc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug lines")
    parser.add_argument("--version", action="version", version=f"framerpc {_version()}")
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

    add_commands(commands)

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
        from ..bench.run import main as bench

        return bench(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        status: int = args.run(args)
    except _USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        print(f"error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
