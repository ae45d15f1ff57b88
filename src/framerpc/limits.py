"""Default limits on received messages, shared by the wire format (what
``decode`` accepts) and the socket options (``SocketOptions`` defaults).

Plain constants, no imports: every layer may read them.
"""

__all__ = ["MAX_FRAMES", "MAX_HEADER_SIZE", "MAX_OBJECTS", "MAX_DEPTH"]

#: Default limits of ``decode``, checked before anything is allocated.
MAX_FRAMES = 1024
MAX_HEADER_SIZE = 16 * 1024 * 1024
#: Default limits on the shape of a header larger than ``SCAN_ABOVE``
#: bytes (see ``framerpc.transport.SocketOptions``): every value, key and container
#: counts one object, an ext reference ``EXT_COST``; a container inside
#: the header map is at depth 2. Measured (benchmarks/bench_hostile.py,
#: 2-core machine): a call whose args hold 999,000 empty lists, the worst
#: shape within the limit, costs the server 0.18 s of CPU (pure engine
#: 0.23 s) and 70 MB; without the limit 4 MiB of them cost 3.5 s and
#: 590 MB. A received value nested 100 deep can still be echoed (encoding
#: recurses; Python's own limit is 1000).
MAX_OBJECTS = 1_000_000
MAX_DEPTH = 100
