"""Old import path of ``framerpc.tools.cli`` (the ``framerpc`` command),
kept so existing imports keep working."""

from .tools.cli import (
    main as main,
)

__all__ = [
    "main",
]
