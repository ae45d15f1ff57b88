"""Bad input never stops a registry."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from bad_input_helpers import (
    EXT_ARRAY,
    EXT_BUFFER,
    SILENCE_MS,
    _dealer_exchange,
    _ext,
    _logged,
    _pack,
    _req_exchange,
)
from conftest import wait_until

from framerpc import framing, protocol
from framerpc.protocol import (
    RegistryEvents,
    RegistryMessage,
)
from framerpc.registry import list_devices, register_device


def _registry_header(rid: Any = 1, **fields: Any) -> bytes:
    header = {"v": 1, "e": "LIST_DEVICES", "i": rid, "pl": {}}
    header.update(fields)
    return _pack(**header)


# name -> (frames after the delimiter, request id the reply echoes, error text)
REGISTRY_CASES: dict[str, tuple[list[bytes], int, str]] = {
    "not msgpack": ([b"\xc1\xc1 not msgpack"], 0, "not valid msgpack"),
    "truncated msgpack": ([_registry_header(40)[:9]], 0, "not valid msgpack"),
    "header is a list": ([msgpack.packb(["LIST_DEVICES"])], 0, "header must be a map"),
    "id is a str": ([_registry_header("x")], 0, "int id"),
    "payload is a list": ([_registry_header(41, pl=[])], 41, "payload map"),
    "event is an int": ([_registry_header(42, e=3)], 42, "unknown registry event"),
    "unknown event": ([_registry_header(43, e="DANCE")], 43, "DANCE"),
    "reply event sent as a request": ([_registry_header(44, e="ACK")], 44, "ACK"),
    "unknown version": ([_registry_header(45, v=2)], 45, "protocol version 2"),
    "no version": ([_pack(e="LIST_DEVICES", i=46, pl={})], 46, "version None"),
    "register without type": (
        [_registry_header(47, e="REGISTER", pl={"addr": "tcp://h:1"})],
        47,
        "device_type",
    ),
    "register with an int name": (
        [
            _registry_header(
                48, e="REGISTER", pl={"device_type": "c", "addr": "a", "name": 3}
            )
        ],
        48,
        "'name' must be str",
    ),
    "alive timeout of nan": (
        [
            _registry_header(
                49, e="CHECK_ALIVE", pl={"uuid": "u", "alive_timeout": 1e999}
            )
        ],
        49,
        "must be positive",
    ),
    "too many frames": (
        [_registry_header(50), *[b"x"] * framing.MAX_FRAMES],
        50,
        f"the limit is {framing.MAX_FRAMES}",
    ),
    "reference to a missing frame": (
        [_registry_header(51, pl={"x": _ext(EXT_BUFFER, 2)})],
        51,
        "refers to frame 2",
    ),
    "array larger than its frame": (
        [_registry_header(52, pl={"x": _ext(EXT_ARRAY, [1, "<u4", [9]])}), b"1234"],
        52,
        "needs 36 bytes, its frame has 4",
    ),
    "bin32 declaring 4 GiB": ([b"\x81\xa1x\xc6\xff\xff\xff\xffab"], 0, "msgpack"),
    # refused by the default depth limit of framing.decode
    "nesting 100000 deep": ([b"\x91" * 100_000], 0, "deeper than 100"),
}


def _registry_reply(body: list[bytes] | None) -> RegistryMessage:
    assert body is not None, "no reply from the registry"
    return protocol.decode_registry(body)


def _assert_registry_serves(ctx, registry) -> None:
    name, _ = register_device(ctx, registry.url, "cam", f"tcp://h:{uuid.uuid4().int}")
    assert name in list_devices(ctx, registry.url)
    assert registry.is_alive()


@pytest.mark.parametrize("case", list(REGISTRY_CASES))
def test_registry_answers_a_malformed_message_with_unsupported(
    ctx, registry, raw, caplog, case
):
    frames, rid, text = REGISTRY_CASES[case]
    sock = raw(registry.url)
    with caplog.at_level(logging.WARNING, logger="framerpc.registry"):
        reply = _registry_reply(_dealer_exchange(sock, frames))
        assert reply.event is RegistryEvents.UNSUPPORTED
        assert reply.request_id == rid
        assert text in reply.payload["error"]
        assert wait_until(lambda: _logged(caplog, "framerpc.registry", text))
    _assert_registry_serves(ctx, registry)


@pytest.mark.parametrize("case", ["not msgpack", "unknown event", "too many frames"])
def test_registry_answers_a_malformed_message_from_a_req_socket(
    ctx, registry, raw, case
):
    frames, rid, text = REGISTRY_CASES[case]
    sock = raw(registry.url, zmq.REQ)
    reply = protocol.decode_registry(_req_exchange(sock, frames))
    assert (reply.event, reply.request_id) == (RegistryEvents.UNSUPPORTED, rid)
    assert text in reply.payload["error"]
    good = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 3)
    reply = protocol.decode_registry(
        _req_exchange(sock, protocol.encode_registry(good))
    )
    assert (reply.event, reply.request_id) == (RegistryEvents.DEVICES, 3)


def test_registry_drops_an_oversized_message_and_serves_on(ctx, registry, raw):
    """The registry accepts frames up to 1 MiB; a larger one drops its sender."""
    sock = raw(registry.url)
    huge = _registry_header(1, pl={"pad": b"\0" * (2 << 20)})
    assert _dealer_exchange(sock, [huge], SILENCE_MS) is None
    _assert_registry_serves(ctx, registry)
    reply = _registry_reply(_dealer_exchange(sock, [_registry_header(2)]))
    assert (reply.event, reply.request_id) == (RegistryEvents.DEVICES, 2)


def test_registry_refuses_a_version_of_the_wrong_type(ctx, registry, raw):
    sock = raw(registry.url)
    frames = framing.encode({"v": np.array([1, 1]), "e": "LIST_DEVICES", "i": 5})
    reply = _registry_reply(_dealer_exchange(sock, frames, 1000))
    assert (reply.event, reply.request_id) == (RegistryEvents.UNSUPPORTED, 5)
