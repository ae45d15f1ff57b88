"""systemd service notification (``sd_notify``) without a dependency.

Under systemd with ``Type=notify`` (and ``WatchdogSec=`` for the watchdog),
the service manager sets ``NOTIFY_SOCKET`` to an AF_UNIX datagram socket
(a path, or an abstract name starting with ``@``) and, with a watchdog,
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). This module sends the state
strings of ``sd_notify(3)`` there: ``READY=1`` once serving, ``WATCHDOG=1``
at least every half interval while alive, ``STOPPING=1`` on the way out.

Without ``NOTIFY_SOCKET`` every call is a cheap no-op that returns False,
so a server calls these functions unconditionally. Socket errors are
logged at debug level and never raised: a broken notification channel must
not stop a device from serving.

A serve loop uses ``Watchdog``::

    watchdog = Watchdog()          # reads the environment once
    ready()
    while serving:
        ...                        # one loop turn
        watchdog.tick()            # sends WATCHDOG=1 when half the interval passed
    stopping()
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

__all__ = [
    "Watchdog",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

_log = logging.getLogger(__name__)

#: Variables systemd sets (``sd_notify(3)``, ``sd_watchdog_enabled(3)``).
_SOCKET_ENV = "NOTIFY_SOCKET"
_USEC_ENV = "WATCHDOG_USEC"
_PID_ENV = "WATCHDOG_PID"


def _address() -> str | None:
    """The notification socket's address, or None when there is none to use.

    An abstract socket (``@name``) becomes ``"\\0name"``, as the kernel
    expects. Other forms (``vsock:...``) are not supported: None.
    """
    value = os.environ.get(_SOCKET_ENV, "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    _log.debug("unsupported %s address %r; notifications are off", _SOCKET_ENV, value)
    return None


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, newline-separated assignments).

    Parameters
    ----------
    state : str
        The notification, as ``sd_notify(3)`` defines it.

    Returns
    -------
    bool
        True when the datagram was sent; False without ``NOTIFY_SOCKET``
        or when sending failed (logged at debug level, never raised).
    """
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        _log.debug("sd_notify %r to %r failed: %s", state, address, exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd the service finished starting (``READY=1``)."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows (``STATUS=...``)."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog() -> bool:
    """Keep the watchdog from firing (``WATCHDOG=1``) once, now."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog interval systemd asked for, in seconds.

    Returns
    -------
    float or None
        ``WATCHDOG_USEC`` in seconds; None when it is unset, not a positive
        integer, or meant for another process (``WATCHDOG_PID`` differs
        from this process id), as ``sd_watchdog_enabled(3)`` decides.
    """
    usec = os.environ.get(_USEC_ENV, "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    pid = os.environ.get(_PID_ENV, "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return value / 1_000_000


class Watchdog:
    """Sends ``WATCHDOG=1`` at most every half interval; cheap to call often.

    Parameters
    ----------
    interval : float, optional
        Watchdog interval (s). By default the one systemd set
        (``watchdog_interval``); without it the watchdog is disabled.
    clock : callable
        Monotonic clock in seconds (tests pass a fake one).

    Attributes
    ----------
    enabled : bool
        Whether ``tick`` sends anything: ``NOTIFY_SOCKET`` was set when
        the object was made and an interval is known.
    period : float or None
        Seconds between two notifications (half the interval).

    Notes
    -----
    The environment is read once, here. Call ``tick`` every loop turn
    of the thread whose liveness the watchdog should prove: if that loop
    hangs (a handler never returns), notifications stop and systemd
    restarts the service. Choose ``WatchdogSec=`` longer than the slowest
    handler.
    """

    __slots__ = ("_clock", "_next", "enabled", "period")

    def __init__(
        self,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval is None:
            interval = watchdog_interval()
        if interval is not None and not interval > 0:
            raise ValueError(f"watchdog interval must be positive, got {interval!r}")
        self.enabled = interval is not None and _address() is not None
        self.period = interval / 2 if interval is not None else None
        self._clock = clock
        self._next = float("-inf")  # the first tick notifies at once

    def tick(self) -> bool:
        """Notify if half the interval passed since the last notification.

        Returns
        -------
        bool
            True when a notification was sent by this call.
        """
        if not self.enabled:
            return False
        now = self._clock()
        if now < self._next:
            return False
        assert self.period is not None
        self._next = now + self.period
        return watchdog()

    def __repr__(self) -> str:
        state = f"every {self.period:g} s" if self.enabled else "disabled"
        return f"<Watchdog {state}>"
