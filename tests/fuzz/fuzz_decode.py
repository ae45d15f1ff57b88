#!/usr/bin/env python3
"""Fuzz harness of framerpc's decoders: whatever arrives, they return a value
or raise ``framerpc.errors.ProtocolError``; anything else is a crash.

One input is split into frames (:func:`split_frames`) and given to
``framing.decode`` and to every ``protocol.decode_*`` function.

Engines:

* atheris (coverage-guided, libFuzzer) when it is installed; its bytes are
  either used as they are or steer mutations of valid messages
  (:func:`from_fuzzer_bytes`), so no corpus on disk is needed;
* otherwise hypothesis, fed with random bytes and with mutations of the
  same valid messages (:func:`seed_inputs`).

Usage::

    python tests/fuzz/fuzz_decode.py -runs=N [-seed=S] [--engine=E] [corpus...]

``-runs`` bounds the number of inputs (CI runs a fixed number), ``-seed``
makes a hypothesis run repeatable, ``--engine`` is ``auto`` (default),
``atheris`` or ``hypothesis``. Other arguments go to libFuzzer (pass
``-artifact_prefix=DIR/`` to keep its crash files out of the current
folder). The exit status is 0 when no input crashed the decoders, non-zero
otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if (_SRC / "framerpc").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))  # a checkout: test the code next to it

#: Most extra frames one input is split into.
MAX_EXTRA_FRAMES = 3
#: Largest extra frame (bytes): the length prefix is taken modulo this + 1.
MAX_FRAME = 4096


def split_frames(data: bytes) -> list[bytes]:
    """Cut one fuzz input into the frames of a message.

    Byte 0 tells how many extra frames follow (modulo 4); each is a 2-byte
    little-endian length (modulo 4097) and its bytes; what remains is the
    header, frame 0. Every input maps to some message.
    """
    if not data:
        return [b""]
    count, rest = data[0] % (MAX_EXTRA_FRAMES + 1), data[1:]
    extra = []
    for _ in range(count):
        if len(rest) < 2:
            break
        size = int.from_bytes(rest[:2], "little") % (MAX_FRAME + 1)
        extra.append(rest[2 : 2 + size])
        rest = rest[2 + size :]
    return [rest, *extra]


def join_frames(frames: Sequence[bytes]) -> bytes:
    """The input :func:`split_frames` turns into ``frames`` (for seeds)."""
    header, *extra = frames
    if len(extra) > MAX_EXTRA_FRAMES or any(len(f) > MAX_FRAME for f in extra):
        raise ValueError("too many or too large frames for a fuzz input")
    out = bytearray([len(extra)])
    for frame in extra:
        out += len(frame).to_bytes(2, "little") + frame
    return bytes(out + header)


def decoders() -> list[Callable]:
    """The functions under test (imported late, so atheris can instrument)."""
    from framerpc import framing, protocol

    return [
        framing.decode,
        protocol.decode_request,
        protocol.decode_reply,
        protocol.decode_signal,
        protocol.decode_registry,
    ]


def check(data: bytes, functions: Sequence[Callable] | None = None) -> None:
    """Decode ``data`` with every decoder; re-raise anything unexpected."""
    from framerpc.errors import ProtocolError

    frames = split_frames(data)
    for decode in functions or decoders():
        try:
            decode(frames)
        except ProtocolError:
            pass


def seed_inputs() -> list[bytes]:
    """Valid messages of every kind, as fuzz inputs to mutate."""
    import numpy as np

    from framerpc import protocol
    from framerpc.protocol import (
        RegistryEvents,
        RegistryMessage,
        Reply,
        Request,
        RPCEvents,
        SignalEmission,
    )

    image = np.arange(1200, dtype=np.uint16).reshape(30, 40)
    messages = [
        protocol.encode_request(Request(RPCEvents.GET_INVENTORY, 1)),
        protocol.encode_request(
            Request(
                RPCEvents.METHOD_CALL,
                2,
                "grab",
                [3, "mode", 1.5, None, True, b"raw", [1, 2]],
                {"shape": [2, 2], "small": np.eye(2)},
            )
        ),
        protocol.encode_request(
            Request(RPCEvents.METHOD_CALL, 3, "put", [image, b"\1" * 4096], {})
        ),
        protocol.encode_request(
            Request(RPCEvents.PROPERTY_SET, 4, name="gain", value={"a": [1]})
        ),
        protocol.encode_reply(Reply(5, True, image, {"shape": [30, 40]}), True),
        protocol.encode_reply(Reply(6, False, error="ValueError: no", traceback="tb")),
        protocol.encode_signal(SignalEmission("frame_ready", [7, "x"])),
        protocol.encode_registry(
            RegistryMessage(
                RegistryEvents.REGISTER,
                {"device_type": "cam", "addr": "tcp://h:1", "name": "c"},
                8,
            )
        ),
    ]
    seeds = []
    for frames in messages:
        raw = [bytes(memoryview(f).cast("B")) for f in frames]
        if len(raw) - 1 <= MAX_EXTRA_FRAMES and all(
            len(f) <= MAX_FRAME for f in raw[1:]
        ):
            seeds.append(join_frames(raw))
    return seeds


def _mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: flip, set, insert, delete, cut."""
    data = bytearray(seed)
    for kind, position, value in edits:
        if not data:
            data.append(value)
            continue
        index = position % len(data)
        if kind == 0:
            data[index] ^= 1 << (value % 8)
        elif kind == 1:
            data[index] = value
        elif kind == 2:
            data.insert(index, value)
        elif kind == 3:
            del data[index]
        else:
            del data[index:]
    return bytes(data)


def from_fuzzer_bytes(data: bytes, seeds: Sequence[bytes]) -> bytes:
    """Turn libFuzzer's raw bytes into an input: raw, or a mutated seed.

    Byte 0 below 128 means "use the rest as is"; otherwise byte 1 picks a
    seed and every 4 bytes after it make one edit of :func:`_mutate`. The
    fuzzer so starts from valid messages without a corpus on disk.
    """
    if not data or data[0] < 128:
        return data[1:]
    seed = seeds[data[1] % len(seeds)] if len(data) > 1 else seeds[0]
    edits = [
        (data[i] % 5, int.from_bytes(data[i + 1 : i + 3], "little"), data[i + 3])
        for i in range(2, len(data) - 3, 4)
    ]
    return _mutate(seed, edits) if edits else seed


def run_hypothesis(runs: int, seed: int | None) -> int:
    """Fuzz with hypothesis for ``runs`` inputs; the exit status."""
    import traceback

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    functions = decoders()
    seeds = seed_inputs()
    edits = st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
    inputs = st.one_of(
        st.binary(max_size=2048),
        st.builds(_mutate, st.sampled_from(seeds), edits),
    )
    count = 0

    @settings(
        max_examples=runs,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def fuzz(data: bytes) -> None:
        nonlocal count
        count += 1
        check(data, functions)

    if seed is not None:
        fuzz = hypothesis_seed(seed)(fuzz)
    try:
        fuzz()
    except Exception:
        traceback.print_exc()
        print(f"fuzz_decode: CRASH after {count} inputs (engine hypothesis)")
        return 1
    print(f"fuzz_decode: {count} inputs, no crash (engine hypothesis)")
    return 0


def run_atheris(argv: list[str]) -> int:
    """Fuzz with atheris (libFuzzer parses ``argv``, e.g. ``-runs=N``)."""
    import atheris

    with atheris.instrument_imports():
        functions = decoders()
    seeds = seed_inputs()

    def test_one_input(data: bytes) -> None:
        check(from_fuzzer_bytes(data, seeds), functions)

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()  # exits the process on a crash; returns after -runs
    return 0


def _option(argv: list[str], name: str) -> str | None:
    for arg in argv:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the harness; ``argv`` as on the command line (without the program)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    engine = _option(argv, "--engine") or "auto"
    argv = [arg for arg in argv if not arg.startswith("--engine=")]
    if engine not in ("auto", "atheris", "hypothesis"):
        print(f"unknown engine {engine!r}", file=sys.stderr)
        return 2
    if engine in ("auto", "atheris"):
        try:
            import atheris  # noqa: F401
        except ImportError:
            if engine == "atheris":
                print("atheris is not installed", file=sys.stderr)
                return 2
        else:
            return run_atheris([sys.argv[0], *argv])
    runs = int(_option(argv, "-runs") or 10_000)
    seed_text = _option(argv, "-seed")
    return run_hypothesis(runs, int(seed_text) if seed_text is not None else None)


if __name__ == "__main__":
    sys.exit(main())
