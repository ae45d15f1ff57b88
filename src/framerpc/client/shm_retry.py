"""When a client tries its shared-memory handshake again.

A handshake (``SHM_HELLO``, see ``framerpc.client.shm``) has three
outcomes. ``{"shm": true}``: buffer replies may come through shared memory.
``{"shm": false}`` or "unknown event" (a server with shared memory off, on
another host, or older): final, never asked again. No answer within the
client's timeout (a server busy at connect or after a restart): not
final; the client stays on the socket and tries again after a back-off of
``FIRST_S`` (1 s), doubling after each unanswered try up to ``CAP_S``
(30 s), for as long as it lives, until the server answers. An answer
resets the back-off.

A retry never makes a call wait for a handshake's timeout: the asyncio
client sends it beside its calls (its replies are matched by request id);
the sync client's timer thread sends it only while no call holds the
client's lock, and a call made meanwhile waits for one round trip of it,
behind which the server (one request at a time) would have put the call
anyway.

A yes after an earlier yes (a handshake again after a restarted or
reconnected server) means the client's signal subscription is a new one
for that server, with a new id, and not claimed (``client.shm_signals``);
so do emissions naming another subscriber id than the claimed one (the
signal socket alone reconnected). ``claims_due`` then asks for
``CLAIM_TRIES`` claims, each of which first learns the subscription's new
id, until one is bound; ``on_again`` wakes the link's thread or task that
makes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CAP_S", "CLAIM_TRIES", "FIRST_S", "HandshakeRetry"]

#: Seconds from a handshake without an answer to the first retry.
FIRST_S = 1.0
#: Longest wait (s) between two retries.
CAP_S = 30.0
#: Claims of the signal subscription tried after a yes again (each waits
#: up to a few seconds for the subscription to come back).
CLAIM_TRIES = 5


class HandshakeRetry:
    """A link's handshake outcome and when to try again (no thread, no
    loop: the sync link's timer thread and the asyncio link's task ask it).

    Attributes
    ----------
    accepted : bool
        The last answer was yes: buffer replies may be references.
    due : float or None
        ``time.monotonic()`` of the next try; None when none is to come
        (an answer came, or no handshake was made yet).
    tries : int
        Handshakes without an answer in a row.
    claims_due : int
        Claims of the signal subscription still to try after a yes again
        (see the module); 0 when none is due.
    on_again : callable or None
        Called at a yes again, after ``claims_due`` was set.
    """

    __slots__ = (
        "_delay",
        "_said_yes",
        "accepted",
        "claims_due",
        "due",
        "on_again",
        "tries",
    )

    def __init__(self) -> None:
        self.accepted = False
        self.due: float | None = None
        self.tries = 0
        self._delay = FIRST_S
        self._said_yes = False  # a server said yes once
        self.claims_due = 0
        self.on_again: Callable[[], None] | None = None

    def answered(self, answer: bool | None) -> None:
        """Record a handshake's outcome (None: no answer in time) and, for
        None, schedule the next try."""
        if answer is None:
            self.accepted = False  # a new server, if any, does not know us
            self.due = time.monotonic() + self._delay
            self._delay = min(CAP_S, self._delay * 2)
            self.tries += 1
            return
        self.accepted = answer
        self.due = None
        self.tries = 0
        self._delay = FIRST_S
        if answer and self._said_yes:  # a new subscription to claim
            self.claim_again()
        self._said_yes = self._said_yes or answer

    def claim_again(self) -> None:
        """The signal subscription is a new one (a yes again, or another
        subscriber id in the emissions): ask for its claims."""
        self.claims_due = CLAIM_TRIES
        if self.on_again is not None:
            self.on_again()

    def wait(self) -> float | None:
        """Seconds until the next try is due (0 when due); None when no
        try is to come."""
        if self.due is None:
            return None
        return max(0.0, self.due - time.monotonic())
