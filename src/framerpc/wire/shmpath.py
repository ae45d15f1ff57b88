"""Chooses the shared-memory hot path engine: compiled
``framerpc.wire._shmpath`` or its pure twin ``framerpc.wire._shmpath_py``
(same names, same behaviour; tests/wire/test_shmpath_parity.py runs both).

It follows the framing engine: the compiled one runs when the compiled
framing does (``FRAMERPC_PURE`` unset, everything built).
``IMPLEMENTATION`` tells which one is live.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .._env import engine_names, follow_engine
from . import framing

__all__ = [
    "IMPLEMENTATION",
    "Lease",
    "Tally",
    "call_frames",
    "copier_stats",
    "copy_into",
    "hold_copier",
    "lease_array",
    "parse_releases",
    "ref_reply",
    "release_copier",
    "resolve",
    "select_engine",
    "split_releases",
]

_log = logging.getLogger(__name__)

#: What each engine module provides, and this module passes on.
PUBLIC_API = (
    "Lease",
    "Tally",
    "call_frames",
    "copier_stats",
    "copy_into",
    "hold_copier",
    "lease_array",
    "parse_releases",
    "ref_reply",
    "release_copier",
    "resolve",
    "split_releases",
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
    return engine_names(_ENGINES[name], PUBLIC_API)


#: Which engine is live: "compiled" or "pure".
_names, IMPLEMENTATION = follow_engine(
    framing.IMPLEMENTATION, _ENGINES, PUBLIC_API, _log
)

if TYPE_CHECKING:  # both engines have the pure one's signatures
    from ._shmpath_py import (
        Lease,
        Tally,
        call_frames,
        copier_stats,
        copy_into,
        hold_copier,
        lease_array,
        parse_releases,
        ref_reply,
        release_copier,
        resolve,
        split_releases,
    )
else:
    Lease = _names["Lease"]
    Tally = _names["Tally"]
    call_frames = _names["call_frames"]
    copy_into = _names["copy_into"]
    copier_stats = _names["copier_stats"]
    hold_copier = _names["hold_copier"]
    release_copier = _names["release_copier"]
    lease_array = _names["lease_array"]
    parse_releases = _names["parse_releases"]
    ref_reply = _names["ref_reply"]
    resolve = _names["resolve"]
    split_releases = _names["split_releases"]
