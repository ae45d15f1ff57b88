# Declarations of the compiled message I/O (ext/_zmqio.pyx, the extension
# framerpc._zmqio) for the compiled call path (ext/_callpath.pyx), which
# calls them from C: no Python-level call between a call and its frames.

cdef void *_handle(sock) except NULL
cdef int _send_frames(sock, list frames, int flags) except -1
cdef int _recv_message(void *handle, list frames, int flags) except -1
cdef int _set_rcvtimeo(void *handle, int wait) except -1
