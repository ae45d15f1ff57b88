"""The scenario of tests/aio/test_aio_blocked_loop.py, run in a child
process (libzmq aborted the whole process when it went wrong).

``python blocked_loop_child.py CALLS BLOCK_S`` serves a device in a thread
with fast heartbeats (a silent link is dropped after 0.4 s), opens an
asyncio proxy with the same options, starts ``CALLS`` calls without
timeout, blocks the loop for ``BLOCK_S`` seconds while the server answers
them, and prints ``ok`` when every call got its answer and the link
stayed up; otherwise what failed (and exits 1).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from abc import ABC, abstractmethod

import zmq

import framerpc.aio
from framerpc.server import RPCServer
from framerpc.transport import SocketOptions

FAST = SocketOptions(
    heartbeat_ivl_ms=100, heartbeat_timeout_ms=300, heartbeat_ttl_ms=300
)
#: Bound (s) that only catches a hang.
HANG_S = 30.0


class Echo(ABC):
    @abstractmethod
    def echo(self, value: int) -> int:
        """Return ``value`` (no timeout)."""


class EchoServer(Echo, RPCServer):
    @RPCServer.register_method_json(timeout=None)
    def echo(self, value: int) -> int:
        return value


async def scenario(url: str, ctx: zmq.Context, calls: int, block_s: float) -> str:
    async with framerpc.aio.connect(Echo, url, context=ctx, options=FAST) as proxy:
        link = proxy._link
        assert await proxy.echo(-1) == -1
        losses = link.watch.losses
        tasks = [asyncio.create_task(proxy.echo(i)) for i in range(calls)]
        await asyncio.sleep(0)  # each call sends (or waits for room)
        sent = sum(entry.sent for entry in link._pending.values())
        time.sleep(block_s)  # blocks the loop: the server answers meanwhile
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for i, r in enumerate(results) if r != i]
        if failed:
            return f"{len(failed)} of {calls} calls failed: {failed[0]!r}"
        if link.watch.losses != losses:
            return "the link was lost"
        if await proxy.echo(-2) != -2:
            return "no answer after"
        return f"ok {sent}"


def main(calls: int, block_s: float) -> int:
    ctx = zmq.Context()
    server = EchoServer(ctx, "tcp://127.0.0.1", options=FAST)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        outcome = asyncio.run(
            asyncio.wait_for(scenario(server.url, ctx, calls, block_s), HANG_S)
        )
    finally:
        server.stop_server()
        thread.join(HANG_S)
    print(outcome, flush=True)
    ctx.destroy(linger=0)
    return 0 if outcome.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2])))
