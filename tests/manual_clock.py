"""A clock for registries, registry links and older peers, moved by hand.

Deadlines measured on it pass only when a test says so, never because the
machine was slow: a test advances it, then waits (with a generous ceiling)
for what must follow, and shows what must not happen yet with a sentinel
request answered after the clock moved.
"""

from __future__ import annotations


class ManualClock:
    """A monotonic clock that moves only when told (thread-safe enough:
    one float attribute, read and replaced atomically)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
