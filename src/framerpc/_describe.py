"""Descriptions of a server's members for its native inventory.

The optional inventory fields ``signatures``, ``docs`` and
``signal_types`` (see docs/protocol.md) let a client without the
interface class, such as ``framerpc inspect``, show what a device offers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from .property import RPCProperty
from .signal import RPCSignal
from .types import type_name

__all__ = ["inventory_fields", "signature_text", "first_doc_line"]

_log = logging.getLogger(__name__)


class _Text:
    """An annotation shown as its text, without the quotes ``repr`` adds."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation_text(annotation: Any) -> str:
    # String annotations (PEP 563) are shown as written.
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def signature_text(func: Any) -> str:
    """``"(us: int) -> bool"``: the signature of a method, without ``self``.

    Returns "" when Python cannot tell the signature (a builtin).
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return ""
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    empty = inspect.Signature.empty
    parameters = [
        p
        if p.annotation is empty
        else p.replace(annotation=_Text(_annotation_text(p.annotation)))
        for p in parameters
    ]
    returns = signature.return_annotation
    if returns is not empty:
        returns = _Text(_annotation_text(returns))
    return str(signature.replace(parameters=parameters, return_annotation=returns))


def first_doc_line(obj: Any, name: str = "", owner: type | None = None) -> str:
    """First line of ``obj``'s docstring, or "".

    A method inherits its docstring (``inspect.getdoc``); a property
    without one takes that of the attribute ``name`` of a base of
    ``owner`` (the interface usually documents it, not the server).
    """
    if not isinstance(obj, RPCProperty):
        doc = inspect.getdoc(obj)
    else:
        bases = owner.__mro__ if owner is not None else ()
        found = (getattr(vars(k).get(name), "__doc__", None) for k in bases)
        doc = obj.__doc__ or next((d for d in found if d), None)
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n", 1)[0].strip()


def _annotated(func: Any, name: str, owner: type | None) -> Any:
    """``func``, or the nearest definition of ``name`` in ``owner``'s bases
    that has annotations when ``func`` has none: a server often overrides
    the interface's typed method without repeating the types."""
    if getattr(func, "__annotations__", None) or owner is None:
        return func
    for klass in owner.__mro__:
        candidate = vars(klass).get(name)
        if inspect.isfunction(candidate) and candidate.__annotations__:
            return candidate
    return func


def inventory_fields(
    members: Mapping[str, Any], owner: type | None = None
) -> dict[str, dict[str, Any]]:
    """The optional inventory fields describing ``members`` (name to the
    class attribute: a method, an RPCProperty or an RPCSignal) of the
    class ``owner``.

    Returns
    -------
    dict
        ``{"signatures": {method: text}, "docs": {member: first line},
        "signal_types": {signal: [type name, ...]}}``; members without a
        docstring are left out of ``docs``.
    """
    signatures: dict[str, str] = {}
    docs: dict[str, str] = {}
    signal_types: dict[str, list[str]] = {}
    for name, member in members.items():
        if isinstance(member, RPCSignal):
            signal_types[name] = [
                t if isinstance(t, str) else type_name(t) for t in member.arg_types
            ]
            continue
        if not isinstance(member, RPCProperty):
            signatures[name] = signature_text(_annotated(member, name, owner))
        try:
            doc = first_doc_line(member, name, owner)
        except Exception as exc:  # a description must never stop a server
            _log.debug("no docstring for %s: %s", name, exc)
            doc = ""
        if doc:
            docs[name] = doc
    return {"signatures": signatures, "docs": docs, "signal_types": signal_types}
