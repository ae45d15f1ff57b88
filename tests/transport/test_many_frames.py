"""A message of very many small frames costs a bounded number of objects.

Each empty frame is 2 bytes on the wire, so 16 MiB carries 8 million of
them; building a Python object per frame cost the server 1.5 GB and 9 s
(compiled engine; 2.2 GB and 30 s pure) before ``framing.decode`` refused
the message for its frame count. ``recv_frames`` keeps at most
``RECV_FRAMES_KEPT`` frames and drops the rest of the message unread.
"""

from __future__ import annotations

import threading

import zmq
from devices import CameraProxy, CameraServer

from framerpc import protocol, transport
from framerpc.transport import _zmqio_py

WAIT_MS = 20000  # catches a hang only


def test_recv_frames_keeps_a_bounded_prefix_and_drops_the_rest() -> None:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        receiver.bind("inproc://many-frames")
        sender.connect("inproc://many-frames")
        kept = _zmqio_py.RECV_FRAMES_KEPT
        sender.send_multipart([b"first"] + [b""] * (3 * kept))
        sender.send_multipart([b"sentinel", b"2"])
        assert receiver.poll(WAIT_MS)
        frames = transport.recv_frames(receiver)
        assert len(frames) == kept
        assert bytes(frames[0]) == b"first"
        # the rest of the long message was dropped: the next one is whole
        frames = transport.recv_frames(receiver)
        assert [bytes(f) for f in frames] == [b"sentinel", b"2"]
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()


def test_server_refuses_a_message_of_many_frames_and_serves_on() -> None:
    context = zmq.Context()
    server = CameraServer(context, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    hostile = context.socket(zmq.DEALER)
    try:
        hostile.connect(server.url)
        header = protocol.encode_call(7, "echo", [1], {})[0]
        hostile.send_multipart([b"", header] + [b""] * 100_000)
        assert hostile.poll(WAIT_MS)
        body = hostile.recv_multipart()[1:]
        reply = protocol.decode_reply(body)
        assert not reply.ok and "frames" in reply.error
        with CameraProxy(context, server.url) as proxy:
            assert proxy.echo("still serving") == "still serving"
    finally:
        hostile.close(linger=0)
        server.stop_server()
        thread.join(30)
        context.term()
