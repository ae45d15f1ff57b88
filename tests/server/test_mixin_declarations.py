"""The attributes RPCServer's mixins declare for mypy (class annotations,
set by ``RPCServer.__init__``) exist on a server, and one that starts as
None is declared as possibly None: the package ships ``py.typed``, so a
declaration that lies misleads users' type checkers, not only ours."""

from __future__ import annotations

import zmq

from framerpc.server import RPCServer


def _declarations(cls: type) -> dict[str, str]:
    """``Class.name`` -> annotation text, for the framerpc.server classes
    of ``cls`` (the annotations are strings: ``from __future__``)."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        if klass.__module__.startswith("framerpc.server."):
            for name, text in vars(klass).get("__annotations__", {}).items():
                found[f"{klass.__name__}.{name}"] = str(text)
    return found


def _misdeclared(server: RPCServer) -> list[str]:
    wrong = []
    for key, text in _declarations(type(server)).items():
        name = key.partition(".")[2]
        if not hasattr(server, name):
            wrong.append(f"{key}: not set by RPCServer.__init__")
        elif getattr(server, name) is None and not (
            "None" in text.split(" | ") or text == "Any"
        ):
            wrong.append(f"{key}: {text}, but None after __init__")
    return wrong


def test_the_mixins_declare_what_they_use():
    # the check below would pass on no declaration at all
    owners = {key.partition(".")[0] for key in _declarations(RPCServer)}
    assert {
        "DiscoveryMixin",
        "RegistrationMixin",
        "JsonBranchMixin",
        "DispatchMixin",
        "PublishingMixin",
        "ServeLoopMixin",
    } <= owners


def test_each_declared_attribute_is_set_and_may_be_what_it_holds(
    ctx: zmq.Context, tmp_path
):
    server = RPCServer(ctx, f"ipc://{tmp_path}/declared")
    try:
        assert _misdeclared(server) == []
    finally:
        server.close()


class _Lying(RPCServer):
    pass


# declarations as a mixin of framerpc.server could get them wrong
_Lying.__module__ = "framerpc.server.lying"
_Lying.__annotations__ = {"uuid": "str", "no_such_attribute": "int"}


def test_a_false_declaration_is_caught(ctx: zmq.Context, tmp_path):
    server = _Lying(ctx, f"ipc://{tmp_path}/lying")
    try:
        assert sorted(_misdeclared(server)) == [
            "_Lying.no_such_attribute: not set by RPCServer.__init__",
            "_Lying.uuid: str, but None after __init__",
        ]
    finally:
        server.close()
