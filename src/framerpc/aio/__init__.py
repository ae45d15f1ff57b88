"""framerpc for asyncio: proxies and servers that live in an event loop.

``async with framerpc.aio.connect(Camera, url) as cam:`` gives a proxy
whose methods are coroutines (``await cam.set_exposure(5)``), whose
properties are awaitables (``await cam.mode``, ``await cam.mode.set(v)``)
and whose signals are async iterators (``async for args in
cam.frame_ready``) or callbacks run on the loop, and whose streams are
subscriptions on the loop (``async with cam.frames.subscribe() as sub:
async for frame, info in sub``). Many calls may be in
flight at once on one proxy. Servers serve inside a loop with ``await
server.serve()``, and a device may define ``async def`` methods. For
mypy, the plugin ``framerpc.aio.mypy_plugin`` types a proxy's methods as
coroutines. See ``docs/guides/asyncio.md`` for the rules.
"""

from ._proxy import AsyncProxy, RemoteProperty, connect, proxy_class
from ._signals import AsyncSignal, SignalIterator
from ._streams import AsyncStream, AsyncSubscription
from .client import AsyncClient
from .server import ServerStoppedError, serve

__all__ = [
    "AsyncClient",
    "AsyncProxy",
    "AsyncSignal",
    "AsyncStream",
    "AsyncSubscription",
    "RemoteProperty",
    "ServerStoppedError",
    "SignalIterator",
    "connect",
    "proxy_class",
    "serve",
]
