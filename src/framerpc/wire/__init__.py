"""Sans-I/O layer: the bytes on the wire, no sockets and no zmq.

``messages`` (native messages and wire constants), ``framing`` (the
engine switch for the msgpack framing: compiled ``_framing`` or pure
``_framing_py``), ``json_codec`` (the older JSON protocol's codec).
"""
