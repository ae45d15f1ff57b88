"""Signal emissions: published subscriber by subscriber on the XPUB signal
socket, each subscriber bounded in bytes (``fanout``), and as JSON on the
older clients' socket once one asked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import zmq

from .. import transport
from ..wire.messages import SignalEmission
from . import fanout

if TYPE_CHECKING:
    import threading

    from .. import _sigseq

__all__ = ["PublishingMixin"]

_log = logging.getLogger(__name__)

#: Frames of signal emissions from this size (bytes) are lent to libzmq and
#: counted against ``SocketOptions.signal_buffer_bytes`` (per subscriber);
#: smaller ones are copied, and a stalled subscriber holds at most
#: ``signal_hwm`` of them. Lower for a small buffer, so that those stay
#: within an eighth of it.
_SIGNAL_TRACK_MIN = 4096


class PublishingMixin:
    """RPCServer's signal publishing (see ``RPCServer``)."""

    # set by RPCServer.__init__
    _signal_lock: threading.Lock
    _signal_socket: zmq.Socket | None
    _sequencer: _sigseq.Sequencer
    _signal_budget: fanout.SignalFanouts
    _signal_fanout: fanout.Fanout
    _legacy_signal_fanout: fanout.Fanout | None

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
            try:
                # subscriptions read first: a new subscriber's handshake
                # token ("" emission) reaches it only once it has a prefix
                self._signal_fanout.publish(emission)
                # None until an older client asks for signals: no JSON cost
                legacy = self._legacy_signal_fanout
                if legacy is not None and name and not legacy.sock.closed:
                    legacy.publish(SignalEmission(name, list(args)))
            except zmq.ContextTerminated:  # ctx.term(): no one left to receive
                return

    def _signals_idle(self) -> None:
        """Read the signal sockets' input when the serve loop is idle:
        libzmq frees what a departed subscriber held only when its socket
        is used, and no emission may come for a long time."""
        if self._signal_lock.acquire(blocking=False):  # an emitter has it
            try:
                self._signal_budget.refresh()
            finally:
                self._signal_lock.release()


def _signal_budget(options: transport.SocketOptions) -> fanout.SignalFanouts:
    """The counters and per-subscriber byte bound of the signal sockets:
    ``signal_buffer_bytes`` less what a stalled subscriber may hold in
    uncounted (copied) emissions, at most ``signal_hwm`` of them."""
    total, hwm = options.signal_buffer_bytes, max(1, options.signal_hwm)
    track_min = max(64, min(_SIGNAL_TRACK_MIN, total // (8 * hwm)))
    return fanout.SignalFanouts(max(0, total - hwm * track_min), track_min)
