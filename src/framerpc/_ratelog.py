"""A warning that a flood of bad messages cannot turn into a flood of log
lines: at most one record per interval, telling how many it stands for."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log warnings at most once per ``interval`` seconds.

    The first warning is logged at once; those that follow within the
    interval are only counted, and the next one logged after it says how
    many were left out. ``count`` does the same for events that come in
    numbers (replies dropped), each record telling the total since the
    last. Thread-safe.

    Parameters
    ----------
    logger : logging.Logger
        Where the records go.
    interval : float
        Shortest time (s) between two records.
    """

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic time of the next record allowed
        self._skipped = 0
        self._counted = 0  # events given to count() since its last record

    def warning(self, message: str, *args: Any) -> None:
        """Log ``message % args`` as a warning, unless one was logged less
        than ``interval`` seconds ago (then count it)."""
        self._log(logging.WARNING, message, args)

    def info(self, message: str, *args: Any) -> None:
        """As ``warning``, at the INFO level: for what a peer causes and a
        counter already reports (the server is not at fault)."""
        self._log(logging.INFO, message, args)

    def count(self, number: int, what: str, reason: str) -> None:
        """Count ``number`` more events and log a warning with the total
        since the last record, unless one was logged less than
        ``interval`` seconds ago.

        Parameters
        ----------
        number : int
            How many events happened now.
        what : str
            What is counted, e.g. ``"replies dropped"``.
        reason : str
            Why, for this latest batch.
        """
        now = time.monotonic()
        with self._lock:
            self._counted += number
            if now < self._next:
                return
            total, self._counted = self._counted, 0
            self._next = now + self.interval
        self.logger.warning(
            "%d %s in the last %.0f s (last: %s)", total, what, self.interval, reason
        )

    def _log(self, level: int, message: str, args: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._skipped += 1
                return
            skipped, self._skipped = self._skipped, 0
            self._next = now + self.interval
        if skipped:
            message += " (and %d more not logged in the last %.1f s)"
            args = (*args, skipped, self.interval)
        self.logger.log(level, message, *args)
