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

import logging
from typing import TYPE_CHECKING, Any

from .. import transport
from .._env import engine_names, follow_engine

__all__ = [
    "Channel",
    "Responder",
    "WAIT_SLICE_MS",
    "IMPLEMENTATION",
    "read_reply",
    "call_fields",
    "never_sent",
    "select_engine",
]

_log = logging.getLogger(__name__)

#: What each engine module provides, and this module passes on.
PUBLIC_API = ("Channel", "Responder", "WAIT_SLICE_MS", "read_reply", "call_fields")

_ENGINES = {
    "compiled": "framerpc.rpc._callpath",
    "pure": "framerpc.rpc._callpath_py",
}


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``Channel``'s "no send to URL in time": the
    request never left (not connected), so what it carried is not lost."""
    return isinstance(exc, TimeoutError) and str(exc).startswith("no send")


def select_engine(name: str) -> dict[str, Any]:
    """The ``PUBLIC_API`` names of engine ``name`` ("compiled" or "pure").

    Raises
    ------
    ImportError
        That engine is not built (or not importable).
    KeyError
        ``name`` is not an engine.
    """
    return engine_names(_ENGINES[name], PUBLIC_API)


#: Which call path is live: "compiled" or "pure". Follows
#: ``transport.IO_IMPLEMENTATION`` (itself following the framing engine).
_names, IMPLEMENTATION = follow_engine(
    transport.IO_IMPLEMENTATION, _ENGINES, PUBLIC_API, _log
)

if TYPE_CHECKING:  # both engines have the pure one's signatures
    from ._callpath_py import WAIT_SLICE_MS, Channel, Responder, call_fields, read_reply
else:
    Channel = _names["Channel"]
    Responder = _names["Responder"]
    WAIT_SLICE_MS = _names["WAIT_SLICE_MS"]
    read_reply = _names["read_reply"]
    call_fields = _names["call_fields"]
