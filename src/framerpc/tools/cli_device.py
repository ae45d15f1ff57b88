"""``framerpc inspect / call / get / set / watch``: a device from the shell.

A device is given by URL (``tcp://host:port``, ``ipc://...``) or by the
name it registered under (looked up in ``--registry``). The commands use a
plain ``RPCClient``, without an interface class: what the
device offers comes from its inventory.

Values on the command line are JSON or Python literals (``3``, ``2.5``,
``'"text"'``, ``"[1, 2]"``, ``"(1, 'a')"``); ``key=VALUE`` is a keyword
argument. Results are printed as JSON; a buffer is summarised (shape,
dtype, size in bytes, CRC-32) and ``--save FILE`` writes it as ``.npy``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import re
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from .. import transport
from ..client.rpc_client import NoResult, RPCClient
from ..errors import RemoteError
from ..signal import UntypedSignal
from ..wire.messages import Request, RPCEvents
from . import cli_streams  # streams

__all__ = ["CommandError", "DEFAULT_REGISTRY", "add_commands", "parse_value"]

#: Where ``--registry`` points by default: a registry on this machine.
DEFAULT_REGISTRY = "tcp://127.0.0.1:5555"
#: Default wait (ms) for the registry and the device's inventory.
DEFAULT_TIMEOUT_MS = 2000
#: Largest array or bytes value printed in full inside a JSON result.
_PRINT_LIMIT = 1000
#: Hosts a server binds on to listen everywhere: not an address to connect to.
_WILDCARD_HOSTS = ("0.0.0.0", "*", "::", "[::]")
_KEYWORD_RE = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)


class CommandError(Exception):
    """A user error: ``framerpc`` prints its message as one line, exits 1."""


# -- values -------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A command-line value: JSON first, then a Python literal.

    Raises
    ------
    CommandError
        ``text`` is neither.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise CommandError(
            f"cannot read {text!r} as JSON or a Python literal "
            f"(a string needs quotes: '\"{text}\"')"
        ) from None


def parse_arguments(words: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword (``key=VALUE``) arguments of a call."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        keyword = _KEYWORD_RE.match(word)
        if keyword is not None:
            kwargs[keyword.group(1)] = parse_value(keyword.group(2))
        else:
            args.append(parse_value(word))
    return args, kwargs


def _crc32(data: Any) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def as_array(buffer: Any) -> np.ndarray:
    """A buffer result as an array: arrays as they are, other buffers as
    1-D uint8 (their raw bytes)."""
    if isinstance(buffer, np.ndarray):
        return buffer
    return np.frombuffer(buffer, dtype=np.uint8)


def summarize(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype, size in bytes and CRC-32 of the C-order bytes."""
    contiguous = np.ascontiguousarray(array)
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "size": int(array.nbytes),
        "crc32": _crc32(contiguous.reshape(-1).view(np.uint8)),
    }


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot show replaced: small arrays as lists,
    large ones and buffers as a summary, unknown objects as their repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        if value.size <= _PRINT_LIMIT and not value.dtype.hasobject:
            return jsonable(value.tolist())
        return {"array": summarize(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) <= _PRINT_LIMIT:
            return {"bytes": len(data), "hex": data.hex()}
        return {"bytes": len(data), "crc32": _crc32(data)}
    return repr(value)


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value))


# -- connecting ---------------------------------------------------------------


def _is_url(target: str) -> bool:
    # A registered name has no ':' or '/': "127.0.0.1:5555" is a URL typo.
    return ":" in target or "/" in target


def resolve(context: zmq.Context, target: str, registry: str, timeout: int) -> str:
    """The URL of ``target``: a URL as given, a name looked up in ``registry``.

    Raises
    ------
    CommandError
        A bad URL, an unreachable registry or an unknown name.
    """
    if _is_url(target):
        try:
            return transport.check_url(target, for_bind=False)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    from ..registry import list_devices

    try:
        devices = list_devices(context, registry, timeout=timeout)
    except TimeoutError as exc:
        raise CommandError(
            f"cannot look up {target!r}: {exc} (give the device's URL, or "
            "--registry URL)"
        ) from None
    if target not in devices:
        known = ", ".join(sorted(devices)) or "none"
        raise CommandError(
            f"no device named {target!r} in the registry at {registry} "
            f"(registered: {known})"
        )
    url = devices[target][1]
    kind, host, port = transport.parse_url(url)
    if kind == "tcp" and host in _WILDCARD_HOSTS:
        # bound on all interfaces: reachable where the registry is
        registry_kind, registry_host, _ = transport.parse_url(registry)
        near = registry_host if registry_kind == "tcp" else "127.0.0.1"
        url = f"tcp://{near}:{port}"
    return url


@contextlib.contextmanager
def connected(args: argparse.Namespace) -> Iterator[RPCClient]:
    """A generic proxy of ``args.device``, closed (with its context) after."""
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be positive (ms), got {args.timeout}")
    context = zmq.Context()
    try:
        url = resolve(context, args.device, args.registry, args.timeout)
        try:
            client = GenericClient(context, url, timeout=args.timeout)
        except TimeoutError:
            raise CommandError(
                f"no device answers at {url} within {args.timeout} ms"
            ) from None
        try:
            yield client
        finally:
            client.close()
    finally:
        context.destroy(linger=0)


class GenericClient(RPCClient):
    """An ``RPCClient`` without interface class, for the commands."""

    def _apply_inventory(self, inventory: dict) -> None:
        super()._apply_inventory(inventory)
        # Found by the client's getattr(self, name) when it makes the
        # proxy's signals; a name the client itself uses is left alone.
        for name in inventory.get("signals", []):
            if isinstance(name, str) and not hasattr(self, name):
                setattr(self, name, UntypedSignal())


def _check_name(client: RPCClient, name: str, kind: str, names: list[str]) -> None:
    if name not in names:
        offered = ", ".join(sorted(names)) or "none"
        plural = "properties" if kind == "property" else f"{kind}s"
        raise CommandError(
            f"{client.name or client.url} has no {kind} {name!r} ({plural}: {offered})"
        )


def _failed(what: str, result: NoResult) -> CommandError:
    return CommandError(f"{what} failed on the device: {result.error}")


def load_descriptions(client: RPCClient) -> None:
    """Read the native inventory, with the optional signatures and docs.

    In ``auto`` mode the client read the JSON inventory, which has none.
    """
    if client._protocol != "native" or client._signatures:
        return
    request = Request(RPCEvents.GET_INVENTORY, next(client._ids))
    reply = client._request(request, client._timeout)
    if reply.ok and type(reply.value) is dict:
        client._apply_inventory(reply.value)


# -- commands -----------------------------------------------------------------


def _inspect(args: argparse.Namespace) -> int:
    with connected(args) as client:
        load_descriptions(client)
        docs = client._docs
        print(f"{client.name or '(unnamed)'} at {client.url} ({client._protocol})")
        for title, methods in (
            ("methods", client._json_methods),
            ("buffer methods", client._buffer_methods),
        ):
            if methods:
                print(f"{title}:")
            for name in sorted(methods):
                signature = client._signatures.get(name) or "(...)"
                _row(f"{name}{signature}", docs.get(name, ""))
        if client._properties:
            print("properties:")
        for name in sorted(client._properties):
            try:
                value = client._get_property(name)
                shown = f"<{value.error}>" if type(value) is NoResult else _dumps(value)
            except TimeoutError:
                shown = "<no reply>"
            _row(f"{name} = {shown}", docs.get(name, ""))
        if client._signals:
            print("signals:")
        for name in sorted(client._signals):
            types = client._signal_types.get(name)
            _row(f"{name}({', '.join(types) if types is not None else '...'})", "")
        cli_streams.show_streams(client)  # streams
    return 0


def _row(text: str, doc: str) -> None:
    print(f"  {text}" + (f"\n      {doc}" if doc else ""))


def _call(args: argparse.Namespace) -> int:
    positional, keywords = parse_arguments(args.args)
    with connected(args) as client:
        methods = [*client._json_methods, *client._buffer_methods]
        _check_name(client, args.method, "method", methods)
        try:
            result = client._call(args.method, positional, keywords)
        except TypeError as exc:
            raise CommandError(f"cannot send the arguments: {exc}") from None
        if type(result) is NoResult:
            raise _failed(args.method, result)
        array: np.ndarray | None
        if args.method in client._buffer_methods:
            buffer, info = result
            array = as_array(buffer)
            print(json.dumps({**summarize(array), "info": jsonable(info)}))
        else:
            array = result if isinstance(result, np.ndarray) else None
            print(_dumps(result))
        if args.save is not None:
            if array is None:
                raise CommandError(f"{args.method} returned no array or buffer to save")
            np.save(args.save, array)
            print(f"saved to {args.save}", file=sys.stderr)
    return 0


def _get(args: argparse.Namespace) -> int:
    with connected(args) as client:
        _check_name(client, args.property, "property", client._properties)
        value = client._get_property(args.property)
        if type(value) is NoResult:
            raise _failed(f"reading {args.property}", value)
        print(_dumps(value))
    return 0


def _set(args: argparse.Namespace) -> int:
    value = parse_value(args.value)
    with connected(args) as client:
        _check_name(client, args.property, "property", client._properties)
        try:
            client._set_property(args.property, value)
        except RemoteError as exc:
            raise CommandError(
                f"setting {args.property} failed on the device: {exc.error}"
            ) from None
        except TypeError as exc:
            raise CommandError(f"cannot send the value: {exc}") from None
    return 0


def _watch(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CommandError(f"--count must be 1 or more, got {args.count}")
    with connected(args) as client:
        streams = cli_streams.stream_names(client)  # streams
        names = args.signals or sorted([*client._signals, *streams])
        for name in names:
            _check_name(client, name, "signal", [*client._signals, *streams])
        if not names:
            raise CommandError(f"{client.name or client.url} has no signals")
        done = threading.Event()
        lock = threading.Lock()
        seen = [0]

        def listener(name: str) -> Any:
            def show(*values: Any) -> None:
                with lock:  # one line per emission, none after the count
                    if done.is_set():
                        return
                    print(f"{name}\t{_dumps(list(values))}", flush=True)
                    seen[0] += 1
                    if args.count is not None and seen[0] >= args.count:
                        done.set()

            return show

        subs = [  # streams: a latest subscription each
            cli_streams.watch_stream(client, n, listener(n))
            for n in streams
            if n in names
        ]
        for name in names:
            if name not in streams:  # streams
                client._signals[name].connect(listener(name))
        try:
            done.wait(args.duration)
        except KeyboardInterrupt:  # the usual way to stop watching
            pass
        finally:
            done.set()
            for sub in subs:  # streams
                sub.close()
            for name in names:
                if name not in streams:  # streams
                    client._signals[name].disconnect()
    return 0


def add_commands(commands: Any) -> None:
    """Add the device commands to the ``framerpc`` sub-command parsers."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("device", help="device URL or registered name")
    device.add_argument(
        "--registry",
        metavar="URL",
        default=DEFAULT_REGISTRY,
        help=f"registry for a device name (default {DEFAULT_REGISTRY})",
    )
    device.add_argument(
        "--timeout",
        metavar="MS",
        type=int,
        default=DEFAULT_TIMEOUT_MS,
        help=f"ms to wait for the registry and the device (default "
        f"{DEFAULT_TIMEOUT_MS}); calls use the method's own timeout",
    )

    inspect = commands.add_parser(
        "inspect",
        parents=[device],
        help="a device's methods, properties (with values) and signals",
    )
    inspect.set_defaults(run=_inspect)

    call = commands.add_parser(
        "call", parents=[device], help="call a method, print the result as JSON"
    )
    call.add_argument("method", help="name of the remote method")
    call.add_argument("args", nargs="*", help="JSON or Python literals; key=VALUE")
    call.add_argument("--save", metavar="FILE", help="write the array/buffer as .npy")
    call.set_defaults(run=_call)

    get = commands.add_parser("get", parents=[device], help="print a property")
    get.add_argument("property", help="property name")
    get.set_defaults(run=_get)

    set_ = commands.add_parser("set", parents=[device], help="set a property")
    set_.add_argument("property", help="property name")
    set_.add_argument("value", help="JSON or a Python literal")
    set_.set_defaults(run=_set)

    watch = commands.add_parser(
        "watch", parents=[device], help="print signal emissions until Ctrl-C"
    )
    watch.add_argument("signals", nargs="*", help="signals to show (default: all)")
    watch.add_argument("--count", metavar="N", type=int, help="stop after N emissions")
    watch.add_argument(
        "--duration", metavar="S", type=float, help="stop after S seconds"
    )
    watch.set_defaults(run=_watch)
