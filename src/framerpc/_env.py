"""Boolean environment variables (``FRAMERPC_PURE``), read one way everywhere,
and the choice between a compiled engine and its pure twin that follows.

Self-contained (standard library only): ``setup.py`` loads this file by
path at build time, before framerpc or its dependencies are importable.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import warnings
from types import ModuleType
from typing import Any

__all__ = [
    "TRUE_WORDS",
    "FALSE_WORDS",
    "parse_flag",
    "env_flag",
    "pure_requested",
    "choose_engine",
    "engine_names",
    "follow_engine",
]

#: Accepted spellings, compared case-insensitively after stripping blanks.
TRUE_WORDS = ("1", "true", "yes", "on")
#: An empty or unset variable is false too.
FALSE_WORDS = ("", "0", "false", "no", "off")


def parse_flag(value: str | None) -> bool | None:
    """``value`` as a bool: None (unset) and ``FALSE_WORDS`` are False,
    ``TRUE_WORDS`` True; anything else gives None (not understood)."""
    if value is None:
        return False
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true spelling.

    An unrecognised value counts as false (the default) with a
    ``RuntimeWarning`` naming the accepted spellings: importing framerpc
    must not fail over a typo, nor silently take it for "yes".
    """
    value = os.environ.get(name)
    flag = parse_flag(value)
    if flag is None:
        warnings.warn(
            f"{name}={value!r} is not understood, taken as false; use one of "
            f"{'/'.join(TRUE_WORDS)} or {'/'.join(w for w in FALSE_WORDS if w)} "
            "(or leave it empty)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return flag


@functools.cache
def pure_requested() -> bool:
    """Whether ``FRAMERPC_PURE`` asks for the pure-Python engines.

    The engine switches (``framerpc.wire.framing``,
    ``framerpc.transport.zmqio``) read it through ``choose_engine``:
    parsed once per process, so a misspelt value warns once.
    """
    return env_flag("FRAMERPC_PURE")


def choose_engine(
    compiled: str, pure: ModuleType, log: logging.Logger
) -> tuple[ModuleType, str]:
    """The engine module of a compiled/pure pair and its name ("compiled"
    or "pure"): the pure twin when ``FRAMERPC_PURE`` asks for it or when
    the compiled module ``compiled`` is not built (said on ``log``)."""
    if pure_requested():
        return pure, "pure"
    try:
        return importlib.import_module(compiled), "compiled"
    except ImportError as exc:
        log.debug("%s unavailable, using its pure twin: %s", compiled, exc)
        return pure, "pure"


def engine_names(module: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``names`` as the engine module ``module`` defines them.

    Raises
    ------
    ImportError
        That module is not built (or not importable).
    """
    engine = importlib.import_module(module)
    return {key: getattr(engine, key) for key in names}


def follow_engine(
    leader: str, engines: dict[str, str], names: tuple[str, ...], log: logging.Logger
) -> tuple[dict[str, Any], str]:
    """``names`` of the compiled engine of ``engines`` ("compiled" and
    "pure" module paths) when ``leader`` (the implementation of the engine
    this one calls into) is "compiled" and it is built, else of the pure
    one; and which ("compiled" or "pure")."""
    if leader == "compiled":
        try:
            return engine_names(engines["compiled"], names), "compiled"
        except ImportError as exc:
            log.debug(
                "%s unavailable, using its pure twin: %s", engines["compiled"], exc
            )
    return engine_names(engines["pure"], names), "pure"
