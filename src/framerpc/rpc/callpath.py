"""Chooses the call path engine: compiled ``framerpc.rpc._callpath`` or
its pure twin ``framerpc.rpc._callpath_py`` (same names, same behaviour;
tests/rpc/test_callpath_parity.py runs both).

The compiled engine runs when the compiled framing and message I/O do
(``FRAMERPC_PURE`` unset, everything built): it calls the compiled
message I/O from C. ``IMPLEMENTATION`` tells which one is live. The
names are listed here, not star-imported, as pyzmq's ``backend/select.py``
does.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .. import transport

__all__ = [
    "Channel",
    "Responder",
    "WAIT_SLICE_MS",
    "IMPLEMENTATION",
    "read_reply",
    "call_fields",
    "select_engine",
]

_log = logging.getLogger(__name__)

#: What each engine module provides, and this module passes on.
PUBLIC_API = ("Channel", "Responder", "WAIT_SLICE_MS", "read_reply", "call_fields")

_ENGINES = {
    "compiled": "framerpc.rpc._callpath",
    "pure": "framerpc.rpc._callpath_py",
}


def select_engine(name: str) -> dict[str, Any]:
    """The ``PUBLIC_API`` names of engine ``name`` ("compiled" or "pure").

    Raises
    ------
    ImportError
        That engine is not built (or not importable).
    KeyError
        ``name`` is not an engine.
    """
    module = importlib.import_module(_ENGINES[name])
    return {key: getattr(module, key) for key in PUBLIC_API}


#: Which call path is live: "compiled" or "pure". Follows
#: ``transport.IO_IMPLEMENTATION`` (itself following the framing engine).
IMPLEMENTATION = "pure"
_names: dict[str, Any] | None = None
if transport.IO_IMPLEMENTATION == "compiled":
    try:
        _names = select_engine("compiled")
        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled call path unavailable, using pure Python: %s", exc)
if _names is None:
    _names = select_engine("pure")

if TYPE_CHECKING:  # both engines have the pure one's signatures
    from ._callpath_py import WAIT_SLICE_MS, Channel, Responder, call_fields, read_reply
else:
    Channel = _names["Channel"]
    Responder = _names["Responder"]
    WAIT_SLICE_MS = _names["WAIT_SLICE_MS"]
    read_reply = _names["read_reply"]
    call_fields = _names["call_fields"]
