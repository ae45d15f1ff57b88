"""Chooses the framing engine: compiled ``framerpc._framing`` or the twin.

Set ``FRAMERPC_PURE=1`` to force the pure-Python twin. ``IMPLEMENTATION``
tells which one is live (``"compiled"`` or ``"pure"``).
"""

from __future__ import annotations

import logging
import os

_log = logging.getLogger(__name__)

if os.environ.get("FRAMERPC_PURE", "") not in ("", "0"):
    from ._framing_py import *  # noqa: F403
    from ._framing_py import __all__

    IMPLEMENTATION = "pure"
else:
    try:
        from ._framing import *  # type: ignore[import-not-found]  # noqa: F403
        from ._framing import __all__  # type: ignore[import-not-found]

        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled framing layer unavailable, using pure Python: %s", exc)
        from ._framing_py import *  # noqa: F403
        from ._framing_py import __all__  # noqa: F401

        IMPLEMENTATION = "pure"
