"""Hostile message shapes cost the decoders work in proportion to their size:
both engines refuse each shape with the same error, and the limits are exact.
"""

from __future__ import annotations

import msgpack
import pytest
from hostile_helpers import _native_shapes

from framerpc import legacy, protocol
from framerpc.errors import MessageTooLargeError, ProtocolError
from framerpc.wire import _framing_py

MIB = 1024 * 1024

try:
    from framerpc.wire import _framing as _framing_c  # type: ignore[attr-defined]
except ImportError:  # no compiler: the pure engine only
    _framing_c = None
ENGINES = [_framing_py] + ([_framing_c] if _framing_c is not None else [])


# -- the decoders ----------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
@pytest.mark.parametrize(
    "shape", [s for s in _native_shapes(1) if s != "header of empty arrays"]
)
def test_both_engines_refuse_a_shape_with_the_same_error(engine, shape):
    frame = _native_shapes(2 * MIB)[shape][0]
    with pytest.raises(MessageTooLargeError) as caught:
        engine.decode([frame])
    reference = None
    try:
        _framing_py.decode([frame])
    except MessageTooLargeError as exc:
        reference = str(exc)
    assert str(caught.value) == reference


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_decode_limits_are_exact(engine):
    pad = "p" * 70_000
    # header map, "a" key and its list, 996 ints, "pad" key and value: 1001
    header = {"a": [1] * 996, "pad": pad}
    frame = msgpack.packb(header)
    assert engine.decode([frame], max_objects=1001) == header
    with pytest.raises(MessageTooLargeError, match="more than 1000 objects"):
        engine.decode([frame], max_objects=1000)
    deep = {"a": [[[1]]], "pad": pad}  # depth 4
    assert engine.decode([msgpack.packb(deep)], max_depth=4) == deep
    with pytest.raises(MessageTooLargeError, match="deeper than 3"):
        engine.decode([msgpack.packb(deep)], max_depth=3)
    # a small header is not checked: its cost is bounded by its size
    assert engine.decode([msgpack.packb({"a": [1] * 100})], max_objects=10)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_an_ext_reference_counts_sixteen_objects(engine):
    item = msgpack.ExtType(3, msgpack.packb(["u1", [1], b"\0"]))
    frame = msgpack.packb({"a": [item] * 10, "pad": "p" * 70_000})
    # header, "a", list, "pad", its value: 5; ten references: 160
    assert len(engine.decode([frame], max_objects=165)["a"]) == 10
    with pytest.raises(MessageTooLargeError):
        engine.decode([frame], max_objects=164)


def test_json_limits():
    pad = '"' + "p" * 70_000 + '"'
    deep = ("[" * 10 + "]" * 10).encode()
    text = b'{"a": ' + deep + b', "pad": ' + pad.encode() + b"}"
    assert legacy.loads(text, max_depth=11)["a"]
    with pytest.raises(MessageTooLargeError, match="deeper than 10"):
        legacy.loads(text, max_depth=10)
    # brackets, commas and colons inside strings do not count
    quoted = b'{"a": "' + b"[,:{" * 30_000 + b'"}'
    assert legacy.loads(quoted, max_objects=10, max_depth=2)["a"]
    with pytest.raises(MessageTooLargeError, match="exceeds the limit of 100"):
        legacy.loads(b"{}" + b" " * 200, max_size=100)
    with pytest.raises(ProtocolError):
        legacy.loads(b"[" * 100_000)


def test_peek_request_id_reads_only_the_leading_scalars():
    assert protocol.peek_request_id(_native_shapes(1000)["empty maps as args"][0]) == 2
    assert protocol.peek_request_id(msgpack.packb({"a": [1], "i": 3})) == -1
    assert protocol.peek_request_id(b"\xdf\xff\xff\xff\xff") == -1
    assert protocol.peek_request_id(b"") == -1
