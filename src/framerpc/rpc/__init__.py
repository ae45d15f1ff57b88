"""The call fast path shared by client and server.

``callpath`` picks the engine: the compiled ``framerpc.rpc._callpath`` or
its pure twin ``framerpc.rpc._callpath_py``. A ``Channel`` is a client's
side of its calls (request ids, deadlines, dropping late replies), a
``Responder`` a server's side of the common one (checking a plain method
call, dispatching it, writing the reply). This is the only place the
checks of a METHOD_CALL's fields live (``callpath.call_fields``, one per
engine), which ``requests`` (the general request parser) uses too;
frames move through ``framerpc.transport``'s message I/O and headers
through ``framerpc.wire.messages``.
"""
