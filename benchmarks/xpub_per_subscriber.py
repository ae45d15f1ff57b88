"""A per-subscriber byte bound that libzmq allows: XPUB in manual mode,
one private prefix per subscriber (a design note for issue 15; used since
issue 11 by ``framerpc.server.fanout``, which adds what is listed at the
end and lends each large frame once per emission).

Run: ``python benchmarks/xpub_per_subscriber.py`` (a few seconds; both
engines decode what it sends). Not a test: it prints what a stalled and a
reading subscriber got, and what the server held and dropped for each.

How: with ``XPUB_MANUAL`` the socket passes each subscription up instead
of applying it, and ``setsockopt(SUBSCRIBE, prefix)`` subscribes the pipe
that sent the last one read. Each subscriber's ``b""`` becomes a private
prefix: the first bytes of a header map whose first key ``"_"`` holds the
subscriber's id (both engines' decoders skip unknown header keys, so
today's clients read these emissions unchanged). An emission is sent once
per subscriber, its buffer frames lent again each time (no copy), each
send with its own ``MessageTracker``: the server knows, per subscriber,
which bytes libzmq still holds, drops for that subscriber alone when a
bound would be passed, and counts it exactly. The send mark never changes
(see ``hwm_live_change.py`` for why it must not).

What the real implementation (``framerpc.server.fanout``) adds: read
the XPUB's input promptly and bound it (``MAXMSGSIZE``; an XPUB keeps
every message a peer sends until it is read); a subscriber's queue is
empty until its subscription was read, so the signal handshake token must
be sent after that; a subscriber that leaves shows up as a bare
``b"\\x00"`` (the prefix is not named); the cost is one small header
and one send per subscriber per emission; the older JSON protocol's
signal socket cannot take a binary prefix (it takes one of JSON
whitespace). A departure's record is found with
``TOPICS_COUNT`` when the next subscriber arrives.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

import msgpack
import zmq

from framerpc import protocol
from framerpc.protocol import SignalEmission

BOUND = 4 << 20  # bytes per subscriber
PAYLOAD = 100_000
COUNT = 3000


class Publisher:
    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_MANUAL, 1)
        self.sock.bind("tcp://127.0.0.1:*")
        self.url = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.ids = itertools.count(1)
        self.subscribers: dict[bytes, dict] = {}

    def read_subscriptions(self) -> None:
        while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            message = self.sock.recv()
            if message[:1] != b"\x01":
                continue  # a departure: b"\x00", which does not say whose
            ident = next(self.ids).to_bytes(2, "big")
            # {"_": <2-byte bin>, 4 more keys}: the header of a signal
            prefix = b"\x85\xa1_\xc4\x02" + ident
            self.sock.setsockopt(zmq.SUBSCRIBE, prefix)  # the pipe just read
            self.subscribers[prefix] = {
                "id": ident,
                "pending": deque(),
                "held": 0,
                "dropped": 0,
            }

    def emit(self, payload: bytes) -> None:
        self.read_subscriptions()
        frames = protocol.encode_signal(SignalEmission("data", [payload]))
        header = msgpack.unpackb(bytes(frames[0]))
        nbytes = sum(memoryview(frame).nbytes for frame in frames)
        for prefix, sub in self.subscribers.items():
            self.release(sub)
            if sub["held"] + nbytes > BOUND:
                sub["dropped"] += 1
                continue
            mine = msgpack.packb({"_": sub["id"], **header})
            assert mine.startswith(prefix)
            rest = frames[1:]
            self.sock.send(mine, zmq.SNDMORE if rest else 0)
            trackers = []
            for index, frame in enumerate(rest):
                lent = zmq.Frame(frame, track=True, copy=False)
                flags = zmq.SNDMORE if index < len(rest) - 1 else 0
                self.sock.send(lent, flags, copy=False, track=True)
                trackers.append(lent.tracker)
            sub["pending"].append((trackers, nbytes))
            sub["held"] += nbytes

    @staticmethod
    def release(sub: dict) -> None:
        pending = sub["pending"]
        while pending and all(t.done for t in pending[0][0]):
            sub["held"] -= pending.popleft()[1]


def main() -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx)
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    reader = ctx.socket(zmq.SUB)
    for sock in (stalled, reader):
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(pub.url)
    while len(pub.subscribers) < 2:
        pub.read_subscriptions()
        time.sleep(0.01)
    got = 0
    for index in range(COUNT):
        pub.emit(b"p" * PAYLOAD)
        if index % 10 == 9:  # a reader that keeps up
            while got < index + 1 and reader.poll(2000):
                protocol.decode_signal(reader.recv_multipart(copy=False))
                got += 1
    time.sleep(0.5)
    print(f"{COUNT} emissions of {PAYLOAD} B, bound {BOUND} B per subscriber")
    for sub in pub.subscribers.values():  # in the order they subscribed
        pub.release(sub)
        print(
            f"subscriber {sub['id'].hex()}: held {sub['held']} B, "
            f"dropped {sub['dropped']}"
        )
    print(f"reader received {got}")
    for sock in (stalled, reader):
        sock.close(linger=0)
    pub.sock.close(linger=0)
    ctx.term()


if __name__ == "__main__":
    main()
