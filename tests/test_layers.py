"""The package layers hold (issue 13): each module imports only what its
layer may, and no source file grows past 450 lines.

The rules read the imports of every .py under src/framerpc (with ast,
imports inside functions and ``if TYPE_CHECKING`` included) and of every
.pyx/.pxi under ext/ (with a regex), so they live in the test suite, not
only in docs/architecture.md:

* ``framerpc.wire`` (sans-I/O) imports no ``zmq`` and nothing from
  transport, client, server, registry, rpc or tools;
* ``framerpc.transport`` imports nothing from wire, client, server,
  registry, rpc or tools;
* the model modules (signal, property, types, errors, limits) import no
  ``zmq`` and nothing from transport;
* only ``framerpc.tools`` imports ``framerpc.tools`` (and the old-path
  re-export modules of the tools).

Old import paths count as the layer they re-export (``framerpc.security``
is transport; ``framerpc.protocol`` is rpc, the highest of the layers it
re-exports: wire's messages and rpc's request parser...). Every violation
is listed in the failure message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "framerpc"
EXT = ROOT / "ext"

MAX_LINES = 450

#: Files allowed over MAX_LINES (none: keep it that way).
TOO_LONG_TODAY: set[str] = set()

#: Imports allowed across the rules (none: keep it that way).
KNOWN_VIOLATIONS_TODAY: set[tuple[str, str]] = set()

#: Old import paths, by the module they stand for (also the compiled
#: modules' old names, which ext/ may still use).
OLD_PATHS = {
    # wire.messages and rpc.requests (the request parser, whose METHOD_CALL
    # checks live in rpc): counted as the higher one
    "framerpc.protocol": "framerpc.rpc.requests",
    "framerpc.framing": "framerpc.wire.framing",
    "framerpc.legacy": "framerpc.wire.json_codec",
    "framerpc._framing_common": "framerpc.wire._framing_common",
    "framerpc._framing_py": "framerpc.wire._framing_py",
    "framerpc._framing": "framerpc.wire._framing",
    "framerpc.security": "framerpc.transport.keys",
    "framerpc._zmqio_py": "framerpc.transport._zmqio_py",
    "framerpc._zmqio": "framerpc.transport._zmqio",
    "framerpc.typing": "framerpc.types",
    "framerpc.cli": "framerpc.tools.cli",
    "framerpc.cli_device": "framerpc.tools.cli_device",
    "framerpc.demo": "framerpc.tools.demo",
}

#: The modules outside tools that may import it: re-exports of old paths.
TOOLS_REEXPORTS = {
    "framerpc.bench",
    "framerpc.bench.run",
    "framerpc.cli",
    "framerpc.cli_device",
    "framerpc.demo",
    "framerpc.__main__",
}

PACKAGES = ("wire", "transport", "client", "server", "registry", "rpc", "tools")
MODEL_MODULES = {
    "framerpc.signal",
    "framerpc.property",
    "framerpc.types",
    "framerpc.errors",
    "framerpc.limits",
}

#: Compiled extensions, by the module they are built as (setup.py).
EXT_MODULES = {
    "_framing.pyx": "framerpc.wire._framing",
    "_zmqio.pyx": "framerpc.transport._zmqio",
    "_callpath.pyx": "framerpc.rpc._callpath",
    "_shmpath.pyx": "framerpc.wire._shmpath",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _py_imports(path: Path) -> list[str]:
    """Absolute names ``path`` imports; ``from X import a`` gives X and X.a
    (a may be a submodule)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


_PYX_IMPORT = re.compile(
    r"^\s*(?:from\s+([\w.]+)\s+c?import\s+([\w, ()]+)|c?import\s+([\w.]+))",
    re.MULTILINE,
)
_PXI_INCLUDE = re.compile(r"""^\s*include\s+["']([\w./]+\.pxi)["']""", re.MULTILINE)


def _pyx_imports(path: Path) -> list[str]:
    found = []
    for source, names, module in _PYX_IMPORT.findall(path.read_text()):
        if module:
            found.append(module)
        else:
            found.append(source)
            found += [f"{source}.{n.strip()}" for n in names.strip("()").split(",")]
    return [name for name in found if name]


def _canonical(name: str) -> str:
    for old, new in OLD_PATHS.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def _layer(name: str) -> str | None:
    """``framerpc.wire`` for any module under it, the module itself for a
    model module, ``zmq`` for pyzmq, None for the rest."""
    name = _canonical(name)
    if name == "zmq" or name.startswith("zmq."):
        return "zmq"
    parts = name.split(".")
    if parts[0] != "framerpc" or len(parts) < 2:
        return None
    if parts[1] in PACKAGES:
        return f"framerpc.{parts[1]}"
    top = ".".join(parts[:2])
    return top if top in MODEL_MODULES else None


def _forbidden(module: str) -> set[str]:
    """Layers ``module`` may not import."""
    layer = _layer(module)
    others = {f"framerpc.{p}" for p in PACKAGES}
    if layer == "framerpc.wire":
        return {"zmq"} | (others - {"framerpc.wire"})
    if layer == "framerpc.transport":
        return others - {"framerpc.transport"}
    if layer in MODEL_MODULES:
        return {"zmq", "framerpc.transport", "framerpc.tools"}
    if layer == "framerpc.tools" or module in TOOLS_REEXPORTS:
        return set()
    return {"framerpc.tools"}


def _sources() -> list[tuple[str, str, list[str]]]:
    """(file relative to the repository, module, its imports) for every
    source file; a .pxi counts as the module of the .pyx that includes it."""
    sources = []
    for path in sorted(PACKAGE.rglob("*.py")):
        sources.append((_rel(path), _module_name(path), _py_imports(path)))
    includer = {}
    for pyx in sorted(EXT.glob("*.pyx")):
        for pxi in _PXI_INCLUDE.findall(pyx.read_text()):
            includer[(EXT / pxi).resolve()] = pyx.name
    for path in sorted([*EXT.glob("*.pyx"), *EXT.glob("*.pxi")]):
        owner = path.name if path.suffix == ".pyx" else includer.get(path.resolve())
        module = EXT_MODULES.get(owner or "", f"ext.{path.stem}")
        sources.append((_rel(path), module, _pyx_imports(path)))
    return sources


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_rules_see_every_package():
    """The walk finds the layers (a moved tree would pass trivially)."""
    modules = {module for _, module, _ in _sources()}
    for package in ("wire", "transport", "client", "server", "registry", "tools"):
        assert f"framerpc.{package}" in modules
    assert EXT_MODULES["_framing.pyx"] in modules
    assert "framerpc.wire.messages" in modules


def test_the_rules_catch_a_forbidden_import():
    """The resolver sees relative, absolute and old-path imports."""
    assert _layer("framerpc.security") == "framerpc.transport"
    assert _layer("framerpc._zmqio_py") == "framerpc.transport"
    assert _layer("zmq.auth.thread") == "zmq"
    assert "framerpc.transport" in _forbidden("framerpc.wire.messages")
    assert "zmq" in _forbidden("framerpc.signal")
    assert "framerpc.tools" in _forbidden("framerpc.server.rpc_server")
    imports = _py_imports(PACKAGE / "transport" / "sockets.py")
    assert "framerpc.transport.curve" in imports  # from .curve import ...


def test_no_module_imports_across_its_layer():
    violations, seen = [], set()
    for rel, module, imports in _sources():
        forbidden = _forbidden(module)
        for name in sorted(set(imports)):
            layer = _layer(name)
            if layer is None or layer not in forbidden:
                continue
            if (rel, layer) in KNOWN_VIOLATIONS_TODAY:
                seen.add((rel, layer))
                continue
            violations.append(f"{rel} ({module}) imports {name} ({layer})")
    stale = sorted(KNOWN_VIOLATIONS_TODAY - seen)
    for line in violations:
        print(line)
    assert not violations, "imports across the layers:\n" + "\n".join(violations)
    assert not stale, f"drop these from KNOWN_VIOLATIONS_TODAY, they hold now: {stale}"


def test_no_source_file_is_over_450_lines():
    too_long, present = [], set()
    files = [*PACKAGE.rglob("*.py"), *EXT.glob("*.pyx"), *EXT.glob("*.pxi")]
    for path in sorted(files):
        rel = _rel(path)
        lines = len(path.read_text().splitlines())
        if lines <= MAX_LINES:
            continue
        if rel in TOO_LONG_TODAY:
            present.add(rel)
            continue
        too_long.append(f"{rel}: {lines} lines")
    stale = sorted(TOO_LONG_TODAY - present)
    for line in too_long:
        print(line)
    assert not too_long, f"files over {MAX_LINES} lines:\n" + "\n".join(too_long)
    assert not stale, f"drop these from TOO_LONG_TODAY, they are short now: {stale}"
