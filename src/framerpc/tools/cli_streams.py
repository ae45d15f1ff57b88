"""Streams in ``framerpc inspect`` and ``framerpc watch`` (see cli_device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..client import RPCClient, streams

__all__ = ["show_streams", "stream_names", "watch_stream"]


def stream_names(client: RPCClient) -> list[str]:
    """The device's streams (read from its native inventory; none over the
    older JSON protocol)."""
    if client._protocol != "native":
        return []
    from .cli_device import load_descriptions

    if not streams.stream_names(client):
        load_descriptions(client)
    return streams.stream_names(client)


def show_streams(client: RPCClient) -> None:
    """Print the ``streams:`` section of ``framerpc inspect``."""
    names = stream_names(client)
    if names:
        print("streams:")
    handles = client.__dict__.get("_stream_handles", {})
    for name in names:
        doc = handles[name].doc if name in handles else ""
        print(f"  {name} (frames + info)" + (f"\n      {doc}" if doc else ""))


def summary(frame: Any, info: dict[str, Any]) -> dict[str, Any]:
    """What ``watch`` prints of one frame: its shape, dtype and info."""
    array = frame if isinstance(frame, np.ndarray) else np.frombuffer(frame, np.uint8)
    return {"shape": list(array.shape), "dtype": str(array.dtype), "info": info}


def watch_stream(
    client: RPCClient, name: str, show: Callable[..., None]
) -> streams.Subscription:
    """Subscribe to stream ``name`` (``latest``), calling ``show(summary)``."""
    handle = client.__dict__["_stream_handles"][name]
    return handle.subscribe(lambda f, i: show(summary(f, i)), policy="latest")
