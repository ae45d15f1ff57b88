"""Chooses the framing engine: compiled ``framerpc._framing`` or the twin.

Set ``FRAMERPC_PURE=1`` (or true/yes/on, any case) to force the
pure-Python twin; empty, 0, false, no and off keep the compiled engine.
``IMPLEMENTATION`` tells which one is live (``"compiled"`` or ``"pure"``).
"""

from __future__ import annotations

import logging
import sys

from .._env import env_flag
from . import _framing_common

_log = logging.getLogger(__name__)

if env_flag("FRAMERPC_PURE"):
    from ._framing_py import *  # noqa: F403
    from ._framing_py import __all__

    IMPLEMENTATION = "pure"
else:
    try:
        # ext/_framing.pyx still imports framerpc._framing_common by its old
        # path until the ext/ split lands: alias it (no file there).
        sys.modules.setdefault("framerpc._framing_common", _framing_common)
        from ._framing import *  # type: ignore[import-not-found]  # noqa: F403
        from ._framing import __all__  # type: ignore[import-not-found]

        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled framing layer unavailable, using pure Python: %s", exc)
        from ._framing_py import *  # noqa: F403
        from ._framing_py import __all__  # noqa: F401

        IMPLEMENTATION = "pure"
