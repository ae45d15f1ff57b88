"""The same-host lane (issue 14): a sync client's calls over the server's
Unix SOCK_SEQPACKET socket, in the live engine; what does not fit in a
packet over ZeroMQ; the switches; threads, timeouts, a restart."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from conftest import wait_until
from devices import bind_again
from lane_helpers import LaneDevice, LaneProxy, lane_stats, needs_lane
from shm_helpers import in_shared_memory, options, shm_url  # noqa: F401

from framerpc import RPCServer
from framerpc.server import lane as server_lane
from framerpc.transport import lane as packets

pytestmark = needs_lane


def test_calls_go_over_the_lane(ctx, shm_url, serve) -> None:  # noqa: F811
    device = serve(LaneDevice(ctx, shm_url))
    with LaneProxy(ctx, device.url) as proxy:
        assert proxy._channel.lane is not None
        assert lane_stats(device)["lane_connections"] == 1
        assert proxy.echo({"a": [1, 2.5, "x", b"y"]}) == {"a": [1, 2.5, "x", b"y"]}
        frame, info = proxy.frame(7)
        assert info == {"seq": 7} and np.all(frame == 7) and in_shared_memory(frame)
        del frame
        assert proxy.echo(3) == 3  # its release rides along, on the lane too
        stats = lane_stats(device)
        assert stats["lane_calls"] == 3 and stats["lane_zmq_replies"] == 0
        assert wait_until(lambda: device.stats["shm_slots_held"] == 0)


def test_a_reply_too_large_for_a_packet_comes_over_zeromq(ctx, tmp_path, serve) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    size = packets.MAX_PACKET + 1  # bytes, not an array: a frame, never shared memory
    with LaneProxy(ctx, device.url) as proxy:
        blob, info = proxy.blob(size)
        assert info == {"size": size}
        assert bytes(blob) == bytes(range(256)) * (size // 256)
        assert proxy.echo("after") == "after"
        stats = lane_stats(device)
        assert stats["lane_calls"] == 2 and stats["lane_zmq_replies"] == 1
        assert stats["lane_replies"] == 1


def test_a_64_kib_frame_comes_back_on_the_lane(ctx, tmp_path, serve) -> None:
    # With 64 KiB packets, a 64 KiB frame and its header did not fit: the
    # reply went over ZeroMQ while the client waited on both, and 64 KiB
    # fetches were 16-43% slower than before the lane existed.
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    size = 64 << 10
    with LaneProxy(ctx, device.url) as proxy:
        blob, info = proxy.blob(size)
        assert info == {"size": size}
        assert bytes(blob) == bytes(range(256)) * (size // 256)
        stats = lane_stats(device)
        assert stats["lane_replies"] == 1 and stats["lane_zmq_replies"] == 0


@pytest.mark.parametrize(
    "offer",
    [
        ["/nowhere", 1, b"t" * packets.TOKEN_BYTES],  # a server of the 64 KiB lane
        ["/nowhere", 1, b"t" * packets.TOKEN_BYTES, 64 << 10],
        ["/nowhere", 1, b"t" * packets.TOKEN_BYTES, packets.MAX_PACKET * 2],
    ],
    ids=["no-bound", "smaller-bound", "larger-bound"],
)
def test_an_offer_of_another_packet_bound_is_not_taken(offer, monkeypatch) -> None:
    # packets one side sends could be over the other's bound: a lost call
    from framerpc.client import lane as client_lane

    def refuse(*args):
        raise AssertionError("connected to an offer of another bound")

    monkeypatch.setattr(client_lane.socket, "socket", refuse)
    assert client_lane._connect(offer, "ipc://x") is None


def test_a_request_too_large_for_a_packet_goes_over_zeromq(
    ctx, tmp_path, serve
) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    big = b"\x07" * (packets.MAX_PACKET + 1)
    with LaneProxy(ctx, device.url) as proxy:
        assert bytes(proxy.echo(big)) == big
        assert lane_stats(device)["lane_calls"] == 0
        assert proxy.echo(1) == 1
        assert lane_stats(device)["lane_calls"] == 1


@pytest.mark.parametrize(
    "server_options, client_options",
    [
        (options(), options(lane=False)),
        (options(lane=False), options()),
        (options(shm=False), options()),
        (options(), options(shm=False)),
    ],
    ids=["client-off", "server-off", "server-shm-off", "client-shm-off"],
)
def test_the_option_off_keeps_every_call_on_zeromq(
    ctx, tmp_path, serve, server_options, client_options
) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock", options=server_options))
    with LaneProxy(ctx, device.url, options=client_options) as proxy:
        assert proxy._channel.lane is None
        assert proxy.echo(5) == 5
        stats = lane_stats(device)
        assert stats.get("lane_calls", 0) == 0
        assert stats.get("lane_connections", 0) == 0


def test_threads_share_one_proxy_over_the_lane(ctx, tmp_path, serve) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def calls(worker: int) -> None:
        try:
            results[worker] = [proxy.echo([worker, i]) for i in range(100)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    with LaneProxy(ctx, device.url) as proxy:
        threads = [threading.Thread(target=calls, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert all(results[w] == [[w, i] for i in range(100)] for w in range(4))
        assert lane_stats(device)["lane_calls"] == 400


def test_a_timed_out_call_leaves_the_lane_usable(ctx, tmp_path, serve) -> None:
    """The late reply to the call that timed out arrives on the lane first:
    the next call drops it and gets its own."""
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    with LaneProxy(ctx, device.url, timeout=2000) as proxy:
        with pytest.raises(TimeoutError, match="no reply to 'wait'"):
            proxy.wait(30)  # the proxy's timeout: 2 s
        assert device.entered.wait(20)
        device.release.set()
        assert proxy.echo("next") == "next"
        assert proxy._channel.lane is not None
        assert lane_stats(device)["lane_calls"] == 2


def test_a_restarted_server_gets_a_new_lane(ctx, tmp_path, serve) -> None:
    url = f"ipc://{tmp_path}/d.sock"
    first = serve(LaneDevice(ctx, url))
    with LaneProxy(ctx, first.url) as proxy:
        assert proxy.echo(1) == 1
        old_lane = proxy._channel.lane
        first.close()
        second = serve(bind_again(lambda: LaneDevice(ctx, url)))
        # the client reads the inventory again and shakes hands again; the
        # server counts the new lane before the client swaps it in (adopt)
        assert wait_until(
            lambda: (
                lane_stats(second)["lane_connections"] == 1
                and proxy._channel.lane is not old_lane
                and old_lane.closed
            )
        )
        assert proxy.echo(2) == 2
        assert lane_stats(second)["lane_calls"] >= 1


def test_requests_other_than_calls_stay_on_zeromq(ctx, tmp_path, serve) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    with LaneProxy(ctx, device.url) as proxy:
        assert proxy._reload_inventory() is not None  # inventory, handshake
        assert lane_stats(device)["lane_calls"] == 0
        assert proxy._channel.lane is not None  # the new handshake's lane
        assert wait_until(lambda: lane_stats(device)["lane_connections"] == 1)
        assert proxy.echo(1) == 1
        assert lane_stats(device)["lane_calls"] == 1


def test_a_broken_lane_leaves_the_calls_on_zeromq(ctx, tmp_path, serve) -> None:
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    with LaneProxy(ctx, device.url) as proxy:
        lane = proxy._channel.lane
        lane.sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it
        assert proxy.echo("a") == "a"
        assert lane.closed
        assert proxy.echo("b") == "b"
        assert lane_stats(device)["lane_calls"] == 0
        assert wait_until(lambda: lane_stats(device)["lane_connections"] == 0)


class _AsyncDevice(LaneDevice):
    @RPCServer.register_method_json
    async def later(self) -> int:
        return 1


def test_a_server_served_by_asyncio_offers_no_lane(ctx, tmp_path, serve) -> None:
    device = serve(_AsyncDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    with LaneProxy(ctx, device.url) as proxy:
        assert proxy._shm is not None and proxy._channel.lane is None
        assert proxy.echo(2) == 2


def test_the_lane_is_polled_only_while_lane_clients_may_use_it(
    ctx, tmp_path, serve, monkeypatch
) -> None:
    """Without lane clients the serve loop keeps its blocking receive on
    the ROUTER (what a remote client's call costs stays as it was)."""
    monkeypatch.setattr(server_lane, "_EXPECT_S", 0.2)
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock"))
    with LaneProxy(ctx, device.url, options=options(lane=False)) as remote:
        assert remote.echo(1) == 1
        assert wait_until(lambda: not device._lane.active)  # its offer expired
        with LaneProxy(ctx, device.url) as local:
            assert device._lane.active and local.echo(2) == 2
            assert remote.echo(3) == 3
        assert wait_until(lambda: not device._lane.active)
        assert remote.echo(4) == 4
        with LaneProxy(ctx, device.url) as again:  # an offer polls again
            assert again._channel.lane is not None and again.echo(5) == 5
        assert lane_stats(device)["lane_calls"] == 2


def test_the_packet_reader_returns_each_packet_at_its_own_size() -> None:
    # one buffer of the bound, each packet copied out (a recv of the bound
    # per packet cost an mmap and an munmap each above 128 KiB)
    one, two = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with one, two:
        packets.size_buffers(one)
        reader = packets.PacketReader()
        for size in (1, 10, 64 << 10, packets.MAX_PACKET):
            sent = bytes([size % 251]) * size
            one.send(sent)
            got = reader.read(two)
            assert type(got) is bytes and got == sent
        one.send(b"\x07" * (packets.MAX_PACKET + 5))
        assert len(reader.read(two)) == packets.MAX_PACKET + 1  # refused by callers
        one.close()
        assert reader.read(two) == b""  # the end of the connection
