"""Signal emissions: publishing on the PUB socket within the signal byte
budget, and as JSON on the older clients' socket once one asked."""

from __future__ import annotations

import logging
from typing import Any

import zmq

from .. import transport
from ..errors import SerializationError
from ..wire import json_codec, messages
from ..wire.messages import SignalEmission
from . import outbox

__all__ = ["PublishingMixin"]

_log = logging.getLogger(__name__)

#: Frames of signal emissions from this size (bytes) are lent to libzmq and
#: counted against ``SocketOptions.signal_buffer_bytes``; smaller ones are
#: copied, and a stalled subscriber holds at most ``signal_hwm`` of them.
#: Lower for a small buffer, so that those stay within a quarter of it.
_SIGNAL_TRACK_MIN = 4096


class PublishingMixin:
    """RPCServer's signal publishing (see ``RPCServer``)."""

    def _publish_signal(self, name: str, *args: Any) -> None:
        with self._signal_lock:
            sock = self._signal_socket
            if sock is None or sock.closed:
                return
            # sigseq: numbered and encoded under the lock, so that numbers
            # follow the order on the wire (the handshake "" is not numbered)
            seq = self._sequencer.stamp(name) if name else None
            epoch = self._sequencer.epoch if name else None
            emission = SignalEmission(name, list(args), seq, epoch)
            frames = messages.encode_signal(emission)
            # PUB drops silently for a subscriber whose queue is full; the
            # budget bounds the bytes those queues hold (and counts drops)
            try:
                self._signal_budget.send(sock, frames, transport.send_frames)
            except zmq.ContextTerminated:  # ctx.term(): no one left to receive
                return
            # None until an older client asks for signals: no JSON cost before.
            legacy_sock = self._legacy_signal_socket
            if legacy_sock is not None and name:
                _publish_json_signal(legacy_sock, name, args, self._signal_budget)


def _signal_budget(options: transport.SocketOptions) -> outbox.SignalBudget:
    """The byte budget of the signal sockets: ``signal_buffer_bytes`` less
    what stalled subscribers may hold in uncounted (copied) frames, at most
    ``signal_hwm`` emissions of one such frame per signal socket (2)."""
    total, hwm = options.signal_buffer_bytes, max(1, options.signal_hwm)
    track_min = max(64, min(_SIGNAL_TRACK_MIN, total // (8 * hwm)))
    return outbox.SignalBudget(max(0, total - 2 * hwm * track_min), track_min)


def _publish_json_signal(
    sock: zmq.Socket, name: str, args: tuple, budget: outbox.SignalBudget
) -> None:
    """Publish one emission to older subscribers (caller holds the lock)."""
    try:
        frame = json_codec.encode_signal(SignalEmission(name, list(args)))
    except SerializationError as exc:
        _log.warning("signal %s not sent to JSON subscribers: %s", name, exc)
        return
    budget.send(sock, [frame], transport.send_frames)
