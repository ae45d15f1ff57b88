"""Chooses the shared-memory hot path engine: compiled
``framerpc.wire._shmpath`` or its pure twin ``framerpc.wire._shmpath_py``
(same names, same behaviour; tests/wire/test_shmpath_parity.py runs both).

It follows the framing engine: the compiled one runs when the compiled
framing does (``FRAMERPC_PURE`` unset, everything built).
``IMPLEMENTATION`` tells which one is live.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from . import _shmpath_py, framing

__all__ = [
    "IMPLEMENTATION",
    "Lease",
    "Tally",
    "call_frames",
    "copy_into",
    "parse_releases",
    "ref_reply",
    "resolve",
    "select_engine",
]

_log = logging.getLogger(__name__)

#: What each engine module provides, and this module passes on.
PUBLIC_API = (
    "Lease",
    "Tally",
    "call_frames",
    "copy_into",
    "parse_releases",
    "ref_reply",
    "resolve",
)

_ENGINES = {"compiled": "framerpc.wire._shmpath", "pure": "framerpc.wire._shmpath_py"}


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


#: Which engine is live: "compiled" or "pure".
IMPLEMENTATION = "pure"
_names: dict[str, Any] | None = None
if framing.IMPLEMENTATION == "compiled":
    try:
        _names = select_engine("compiled")
        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled shared-memory path unavailable: %s", exc)
if _names is None:
    _names = {key: getattr(_shmpath_py, key) for key in PUBLIC_API}

if TYPE_CHECKING:  # both engines have the pure one's signatures
    from ._shmpath_py import (
        Lease,
        Tally,
        call_frames,
        copy_into,
        parse_releases,
        ref_reply,
        resolve,
    )
else:
    Lease = _names["Lease"]
    Tally = _names["Tally"]
    call_frames = _names["call_frames"]
    copy_into = _names["copy_into"]
    parse_releases = _names["parse_releases"]
    ref_reply = _names["ref_reply"]
    resolve = _names["resolve"]
