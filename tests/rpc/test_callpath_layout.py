"""Where the call path lives and how the compiled sources are laid out.

The message I/O twins only move frames: the checks and headers of a call
live in framerpc.rpc. No compiled source (.pyx or included .pxi) grows
past 450 lines, and an sdist ships every one of them (and the .pxd the
call path cimports), so that it builds.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from engines import CALLPATH_ENGINES, once_per_suite

from framerpc.errors import ProtocolError

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "ext"

pytestmark = [
    once_per_suite,
    pytest.mark.skipif(not EXT.is_dir(), reason="not a source checkout"),
]

MAX_LINES = 450
# the message I/O twins: the pure one, and the compiled one with its include
MESSAGE_IO = [
    ROOT / "src" / "framerpc" / "transport" / "_zmqio_py.py",
    EXT / "_zmqio.pyx",
    EXT / "_libzmq.pxi",
]
# from X import (a, b) / from X cimport a / import X / cimport X, in Cython
_CYTHON_IMPORT = re.compile(
    r"^(?:from\s+(\S+)\s+c?import\s+(\([^)]*\)|[^\n]+)|c?import\s+(\S+))",
    re.MULTILINE,
)


def _imported(path: Path) -> set[str]:
    """Modules a .py/.pyx/.pxi file imports or cimports, and for
    ``from X import a`` also ``X.a`` (relative imports made absolute)."""
    text = path.read_text()
    names = set()
    if path.suffix == ".py":
        package = ".".join(path.relative_to(ROOT / "src").parent.parts)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join([*base, *filter(None, [node.module])])
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        return names
    for module, what, plain in _CYTHON_IMPORT.findall(text):
        names.add(module or plain)
        for name in re.split(r"[\s,()]+", what):
            if name and name != "as":
                names.add(f"{module}.{name}")
    return names


def test_no_compiled_source_is_over_450_lines():
    sources = sorted(EXT.glob("*.pyx")) + sorted(EXT.glob("*.pxi"))
    assert len(sources) >= 6, sources  # the split files are there
    for path in sources:
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.name}: {lines} lines"


def test_framing_includes_its_writer_and_reader():
    text = (EXT / "_framing.pyx").read_text()
    for include in ("_packer.pxi", "_unpacker.pxi"):
        assert f'include "{include}"' in text
        # setup.py lists them, so that editing one rebuilds the extension
        assert f"ext/{include}" in (ROOT / "setup.py").read_text()


@pytest.mark.parametrize("path", MESSAGE_IO, ids=lambda p: p.name)
def test_message_io_twins_only_move_frames(path):
    imported = _imported(path)
    if re.search(r"^(from|import|cimport) ", path.read_text(), re.MULTILINE):
        assert imported, "no import found: is the pattern stale?"
    for module in imported:
        assert not module.startswith(
            ("framerpc.protocol", "framerpc.wire", "framerpc.rpc")
        ), module
    text = path.read_text()
    for word in ("METHOD_CALL", "class Channel", "class Responder"):
        assert word not in text, f"{path.name} has {word!r}"


def test_the_call_path_pair_takes_its_keys_from_the_wire_layer():
    pure = ROOT / "src" / "framerpc" / "rpc" / "_callpath_py.py"
    compiled = EXT / "_callpath.pyx"
    for path in (pure, compiled):
        assert "framerpc.wire.messages.KEY_VERSION" in _imported(path), path.name
        # no header written with literal keys
        assert not re.search(r"""\{\s*["']v["']\s*:""", path.read_text()), path.name
    # the compiled twin reaches the compiled I/O from C, not through Python
    assert "framerpc.transport._zmqio._send_frames" in _imported(compiled)


@pytest.mark.timeout(120)
def test_sdist_ships_the_cython_sources(tmp_path):
    env = {**os.environ, "FRAMERPC_PURE": "1"}  # no compiler needed to pack
    done = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "sdist",
            "-d",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {
        str(path.relative_to(ROOT))
        for pattern in ("ext/*.pyx", "ext/*.pxi", "src/**/*.pxd")
        for path in ROOT.glob(pattern)
    }
    assert "src/framerpc/transport/_zmqio.pxd" in wanted
    assert wanted <= shipped, sorted(wanted - shipped)
    assert not any(name.startswith("ext/") and name.endswith(".c") for name in shipped)


# -- the one METHOD_CALL check (issue 13) -------------------------------------
MESSAGES = ROOT / "src" / "framerpc" / "wire" / "messages.py"
CALLPATH_PURE = ROOT / "src" / "framerpc" / "rpc" / "_callpath_py.py"
CALLPATH_PYX = EXT / "_callpath.pyx"
_CALL_KEYS = {"m", "a", "k", "KEY_METHOD", "KEY_ARGS", "KEY_KWARGS"}
# where wire/messages.py may name METHOD_CALL: the enum, and the encoders
_MAY_NAME_METHOD_CALL = {"RPCEvents", "encode_call", "encode_request"}


def _is_call_key(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and node.value in _CALL_KEYS) or (
        isinstance(node, ast.Name) and node.id in _CALL_KEYS
    )


def _call_field_reads(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(enclosing def or class, line, what) of each mention of METHOD_CALL
    and each read of a call field's key (``h.get(k)``, ``h[k]``, ``k in h``)."""
    found = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = where
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = child.name
            what = None
            if (isinstance(child, ast.Attribute) and child.attr == "METHOD_CALL") or (
                isinstance(child, ast.Constant) and child.value == "METHOD_CALL"
            ):
                what = "METHOD_CALL"
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "get"
                and child.args
                and _is_call_key(child.args[0])
            ):
                what = "get"
            elif isinstance(child, ast.Subscript) and _is_call_key(child.slice):
                what = "subscript"
            elif (
                isinstance(child, ast.Compare)
                and any(isinstance(op, (ast.In, ast.NotIn)) for op in child.ops)
                and _is_call_key(child.left)
            ):
                what = "in"
            if what:
                found.append((name, child.lineno, what))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_wire_holds_no_method_call_field_checks():
    from framerpc.wire import messages

    # no table entry: the fields of the other events only
    assert messages.RPCEvents.METHOD_CALL not in messages._REQUEST_FIELDS
    for fields in messages._REQUEST_FIELDS.values():
        assert not {key for _, key, _ in fields} & _CALL_KEYS, fields
    # no code path: wire's field parser refuses the event outright
    call = {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "f", "a": [], "k": {}}
    with pytest.raises(ValueError, match=r"not parsed by framerpc\.wire"):
        messages.request_from_fields(call, messages.RPCEvents.METHOD_CALL)
    # and no line of it names the event or reads a call field, but the
    # enum and the encoders (which write them)
    found = _call_field_reads(ast.parse(MESSAGES.read_text()))
    assert any(where == "encode_call" for where, _, _ in found)  # the scan works
    stray = [hit for hit in found if hit[0] not in _MAY_NAME_METHOD_CALL]
    assert not stray, f"METHOD_CALL field checks in wire/messages.py: {stray}"


def test_the_scan_would_see_a_method_call_check_in_wire():
    source = (
        'T = {RPCEvents.METHOD_CALL: (("method", "m", str),)}\n'
        "def parse(header):\n"
        "    if 'm' not in header: raise ProtocolError('lacks m')\n"
        "    return header.get(KEY_ARGS), header[KEY_KWARGS]\n"
    )
    found = {(where, what) for where, _, what in _call_field_reads(ast.parse(source))}
    assert found == {
        ("<module>", "METHOD_CALL"),
        ("parse", "in"),
        ("parse", "get"),
        ("parse", "subscript"),
    }


@pytest.mark.parametrize("path", [CALLPATH_PURE, CALLPATH_PYX], ids=lambda p: p.name)
def test_each_responder_uses_its_engines_one_check(path):
    text = path.read_text()
    responder = text[text.index("class Responder") :]
    assert "_call_fields(header, False)" in responder
    # the checks of the fields are written once, in _call_fields; the
    # Responder reads no call field's key itself
    for check in (
        "type(args) is not list",
        "type(kwargs) is not dict",
        "!= _METHOD_CALL",
    ):
        assert text.count(check) == 1, (path.name, check)
        assert check not in responder, (path.name, check)
    for key in ("KEY_METHOD", "KEY_ARGS", "KEY_KWARGS", "KEY_EVENT"):
        assert f"{key})" not in responder.replace("_K_", "KEY_"), (path.name, key)


def test_wire_says_where_the_request_parser_went():
    from framerpc.wire import messages

    for name in ("decode_request", "request_from_header"):
        with pytest.raises(AttributeError, match=r"moved to framerpc\.rpc\.requests"):
            getattr(messages, name)
    assert not hasattr(messages, "no_such_name")


def test_the_general_parser_uses_the_live_engines_check():
    from framerpc import protocol
    from framerpc.rpc import callpath, requests

    assert requests.call_fields is callpath.call_fields
    assert callpath.call_fields.__module__ == callpath.Channel.__module__
    assert protocol.request_from_header is requests.request_from_header
    assert protocol.decode_request is requests.decode_request


_GOOD_CALL = {"v": 1, "e": "METHOD_CALL", "i": 5, "m": "echo", "a": [1], "k": {}}


def _without(key: str) -> dict:
    return {k: v for k, v in _GOOD_CALL.items() if k != key}


class _List(list):  # a subclass: msgpack never gives one, the checks refuse it
    pass


#: Headers and what the check gives: the fields, or the ProtocolError text
#: (the general parser's texts, unchanged since the checks moved).
CHECK_TABLE = [
    (_GOOD_CALL, (5, "echo", [1], {})),
    (
        {**_GOOD_CALL, "i": -1, "m": "", "a": [], "k": {"x": b"y"}, "z": 1},
        (-1, "", [], {"x": b"y"}),
    ),
    ({**_GOOD_CALL, "i": 2**63 - 1}, (2**63 - 1, "echo", [1], {})),
    (_without("v"), "unsupported protocol version None (this side speaks 1)"),
    ({**_GOOD_CALL, "v": 2}, "unsupported protocol version 2 (this side speaks 1)"),
    (
        {**_GOOD_CALL, "v": True},
        "unsupported protocol version True (this side speaks 1)",
    ),
    ({**_GOOD_CALL, "v": 1.0}, "unsupported protocol version 1.0 (this side speaks 1)"),
    (_without("e"), "unknown event None for a request"),
    ({**_GOOD_CALL, "e": "nope"}, "unknown event 'nope' for a request"),
    ({**_GOOD_CALL, "e": b"METHOD_CALL"}, "unknown event b'METHOD_CALL' for a request"),
    ({**_GOOD_CALL, "e": "EMIT_SIGNAL"}, "unknown event 'EMIT_SIGNAL' for a request"),
    (
        {**_GOOD_CALL, "e": "PROPERTY_GET"},
        "'PROPERTY_GET' is not a METHOD_CALL request",
    ),
    (_without("m"), "METHOD_CALL request lacks field 'm' (method)"),
    ({**_GOOD_CALL, "m": None}, "METHOD_CALL field 'method' must be str, got NoneType"),
    ({**_GOOD_CALL, "m": b"echo"}, "METHOD_CALL field 'method' must be str, got bytes"),
    (_without("a"), "METHOD_CALL request lacks field 'a' (args)"),
    ({**_GOOD_CALL, "a": (1,)}, "METHOD_CALL field 'args' must be list, got tuple"),
    ({**_GOOD_CALL, "a": _List()}, "METHOD_CALL field 'args' must be list, got _List"),
    (_without("k"), "METHOD_CALL request lacks field 'k' (kwargs)"),
    ({**_GOOD_CALL, "k": []}, "METHOD_CALL field 'kwargs' must be dict, got list"),
    (_without("i"), "request id must be an int, got None"),
    ({**_GOOD_CALL, "i": "5"}, "request id must be an int, got '5'"),
    ({**_GOOD_CALL, "i": True}, "request id must be an int, got True"),
    ({**_GOOD_CALL, "i": 5.0}, "request id must be an int, got 5.0"),
    # the order: version, event, method, args, kwargs, then the id
    ({"e": "nope", "m": 1}, "unsupported protocol version None (this side speaks 1)"),
    (
        {**_GOOD_CALL, "m": 1, "a": 1, "i": None},
        "METHOD_CALL field 'method' must be str, got int",
    ),
    ({**_GOOD_CALL, "a": 1, "k": 1}, "METHOD_CALL field 'args' must be list, got int"),
    (
        {**_GOOD_CALL, "k": 1, "i": None},
        "METHOD_CALL field 'kwargs' must be dict, got int",
    ),
]


def _outcome(check, header: dict):
    try:
        return check(dict(header))
    except ProtocolError as exc:
        return str(exc)


@pytest.mark.parametrize("engine", CALLPATH_ENGINES)
@pytest.mark.parametrize("header, expected", CHECK_TABLE, ids=range(len(CHECK_TABLE)))
def test_call_fields_gives_the_fields_or_the_error(engine, header, expected):
    from framerpc import protocol
    from framerpc.wire.messages import Request, RPCEvents

    assert _outcome(engine.callpath.call_fields, header) == expected
    if header.get("e") == "PROPERTY_GET":
        return  # the general parser reads another event's request
    # and the general parser gives the same request or the same error
    got = _outcome(protocol.request_from_header, header)
    if isinstance(expected, tuple):
        assert got == Request(RPCEvents.METHOD_CALL, *expected)
    else:
        assert got == expected


def _variants():
    """The good call, then each field left out or replaced by each candidate."""
    candidates = [
        None,
        True,
        0,
        1,
        2,
        -1,
        1.0,
        "",
        "METHOD_CALL",
        "PROPERTY_SET",
        "echo",
        b"echo",
        [],
        [1],
        (),
        {},
        {"x": 1},
        _List([1]),
    ]
    yield dict(_GOOD_CALL)
    for key in ("v", "e", "i", "m", "a", "k", "x"):
        yield _without(key)
        for value in candidates:
            yield {**_GOOD_CALL, key: value}


def test_both_engines_check_alike():
    pure, compiled = (param.values[0] for param in CALLPATH_ENGINES)
    if compiled is None:
        pytest.skip("the compiled call path is not built")
    outcomes = []
    for header in _variants():
        expected = _outcome(pure.callpath.call_fields, header)
        assert _outcome(compiled.callpath.call_fields, header) == expected, header
        outcomes.append(type(expected))
    assert tuple in outcomes and str in outcomes  # both kinds are compared
