"""mypy plugin: asyncio proxies typed after their interface.

``framerpc.aio.connect(Camera, url)`` gives an ``AsyncProxy[Camera]``.
Python's typing cannot say "Camera with every method made a coroutine",
so without this plugin the interface's members of the proxy are ``Any``
(``AsyncProxy.__getattr__``). With it, mypy sees each method of the
interface with its own parameters, returning a coroutine of its return
type (``await cam.set_exposure(5)`` is a ``bool``, ``cam.set_exposure("x")``
an error), each ``RPCProperty`` as a ``RemoteProperty``, each
``RPCSignal`` as an ``AsyncSignal`` and each ``RPCStream`` as an
``AsyncStream``.

Enable it in the mypy configuration::

    [tool.mypy]
    plugins = ["framerpc.aio.mypy_plugin"]
"""

from __future__ import annotations

from collections.abc import Callable

# mypy.plugin first: imported alone, mypy.maptype trips over a circular
# import inside mypy (as when this module is imported outside mypy)
from mypy.plugin import AttributeContext, Plugin  # isort: skip
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import Decorator, FuncDef, OverloadedFuncDef, TypeInfo, Var
from mypy.subtypes import find_member
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    Overloaded,
    Type,
    TypeOfAny,
    get_proper_type,
)

__all__ = ["plugin"]

_PROXY = "framerpc.aio._proxy.AsyncProxy"
_PROPERTY = "framerpc.property.RPCProperty"
_SIGNAL = "framerpc.signal.RPCSignal"
_REMOTE_PROPERTY = "framerpc.aio._proxy.RemoteProperty"
_ASYNC_SIGNAL = "framerpc.aio._signals.AsyncSignal"
_STREAM = "framerpc.stream.RPCStream"
_ASYNC_STREAM = "framerpc.aio._streams.AsyncStream"


class _ProxyPlugin(Plugin):
    def get_attribute_hook(
        self, fullname: str
    ) -> Callable[[AttributeContext], Type] | None:
        # members AsyncProxy does not have reach its __getattr__: this hook
        if fullname.startswith(_PROXY + "."):
            return _interface_member
        return None


def _interface_member(ctx: AttributeContext) -> Type:
    """The type of ``proxy.name``: the interface's member, made async."""
    proxy = get_proper_type(ctx.type)
    name = _attribute_name(ctx)
    if not isinstance(proxy, Instance) or name is None:
        return ctx.default_attr_type
    base = next((b for b in proxy.type.mro if b.fullname == _PROXY), None)
    if base is None:
        return ctx.default_attr_type
    args = map_instance_to_supertype(proxy, base).args
    interface = get_proper_type(args[0]) if args else None
    if not isinstance(interface, Instance):
        return ctx.default_attr_type  # AsyncProxy[Any]: members stay Any
    symbol = interface.type.get(name)
    node = symbol.node if symbol is not None else None
    if node is None:
        ctx.api.fail(
            f'"{interface.type.name}" has no attribute "{name}" '
            "(asyncio proxy of the interface)",
            ctx.context,
        )
        return AnyType(TypeOfAny.from_error)
    api = ctx.api
    if _is_property(node):
        return _instance(api, _REMOTE_PROPERTY) or ctx.default_attr_type
    if isinstance(node, Var):
        declared = get_proper_type(node.type)
        if isinstance(declared, Instance) and declared.type.has_base(_SIGNAL):
            return _instance(api, _ASYNC_SIGNAL) or ctx.default_attr_type
        if isinstance(declared, Instance) and declared.type.has_base(_STREAM):
            return _instance(api, _ASYNC_STREAM) or ctx.default_attr_type
        return ctx.default_attr_type
    member = get_proper_type(find_member(name, interface, interface))
    if isinstance(member, CallableType):
        return _as_coroutine(member, api)
    if isinstance(member, Overloaded):
        return Overloaded([_as_coroutine(item, api) for item in member.items])
    return ctx.default_attr_type


def _instance(api: object, fullname: str) -> Instance | None:
    """An instance of the class ``fullname``, looked up in its module (a
    private module is not reachable by attribute from its package)."""
    module_name, _, name = fullname.rpartition(".")
    module = getattr(api, "modules", {}).get(module_name)
    symbol = module.names.get(name) if module is not None else None
    info = symbol.node if symbol is not None else None
    return Instance(info, []) if isinstance(info, TypeInfo) else None


def _attribute_name(ctx: AttributeContext) -> str | None:
    name = getattr(ctx.context, "name", None)  # the MemberExpr being checked
    return name if isinstance(name, str) else None


def _is_property(node: object) -> bool:
    if isinstance(node, Var):
        declared = get_proper_type(node.type)
        return isinstance(declared, Instance) and declared.type.has_base(_PROPERTY)
    if isinstance(node, Decorator):
        return node.var.is_property or any(
            getattr(d, "fullname", None) == _PROPERTY for d in node.decorators
        )
    if isinstance(node, OverloadedFuncDef):  # a property with a setter
        return node.is_property
    return isinstance(node, FuncDef) and node.is_property


def _as_coroutine(method: CallableType, api: object) -> CallableType:
    any_type = AnyType(TypeOfAny.special_form)
    coroutine = api.named_generic_type(  # type: ignore[attr-defined]
        "typing.Coroutine", [any_type, any_type, method.ret_type]
    )
    return method.copy_modified(ret_type=coroutine)


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return _ProxyPlugin
