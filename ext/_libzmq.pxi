# Included by _zmqio.pyx: the libzmq functions it calls, looked up in the
# libzmq that pyzmq loaded (see the module docstring), and the errno values
# they report. Uses _zmqio.pyx's import of pyzmq's backend (_backend).

cdef extern from "dlfcn.h" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from "errno.h":
    int EAGAIN
    int EINTR

# libzmq's message: 64 opaque bytes, pointer-aligned (zmq.h).
ctypedef struct zmq_msg_t:
    void *_opaque[8]

ctypedef int (*msg_init_t)(zmq_msg_t *) noexcept nogil
ctypedef int (*msg_recv_t)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef int (*msg_close_t)(zmq_msg_t *) noexcept nogil
ctypedef void *(*msg_data_t)(zmq_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_t)(const zmq_msg_t *) noexcept nogil
ctypedef int (*msg_more_t)(const zmq_msg_t *) noexcept nogil
ctypedef int (*send_t)(void *, const void *, size_t, int) noexcept nogil
ctypedef int (*errno_t)() noexcept nogil
ctypedef int (*setsockopt_t)(void *, int, const void *, size_t) noexcept nogil
ctypedef void (*free_fn_t)(void *, void *) noexcept nogil
ctypedef int (*msg_init_data_t)(zmq_msg_t *, void *, size_t, free_fn_t,
                                void *) noexcept nogil
ctypedef int (*msg_send_t)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef const char *(*msg_gets_t)(const zmq_msg_t *, const char *) noexcept nogil

cdef msg_init_t z_msg_init
cdef msg_recv_t z_msg_recv
cdef msg_close_t z_msg_close
cdef msg_data_t z_msg_data
cdef msg_size_t z_msg_size
cdef msg_more_t z_msg_more
cdef send_t z_send
cdef errno_t z_errno
cdef setsockopt_t z_setsockopt
cdef msg_init_data_t z_msg_init_data
cdef msg_send_t z_msg_send
cdef msg_gets_t z_msg_gets


cdef void *_symbol(void *lib, const char *name) except NULL:
    cdef void *found = dlsym(lib, name)
    if found == NULL:
        raise ImportError(f"libzmq symbol {name.decode()} not found")
    return found


cdef _load():
    global z_msg_init, z_msg_recv, z_msg_close, z_msg_data, z_msg_size
    global z_msg_more, z_send, z_errno, z_setsockopt, z_msg_init_data, z_msg_send
    global z_msg_gets
    path = _backend.__file__.encode()
    cdef void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise ImportError(f"cannot reach pyzmq's libzmq: {dlerror().decode()}")
    z_msg_init = <msg_init_t>_symbol(lib, b"zmq_msg_init")
    z_msg_recv = <msg_recv_t>_symbol(lib, b"zmq_msg_recv")
    z_msg_close = <msg_close_t>_symbol(lib, b"zmq_msg_close")
    z_msg_data = <msg_data_t>_symbol(lib, b"zmq_msg_data")
    z_msg_size = <msg_size_t>_symbol(lib, b"zmq_msg_size")
    z_msg_more = <msg_more_t>_symbol(lib, b"zmq_msg_more")
    z_send = <send_t>_symbol(lib, b"zmq_send")
    z_errno = <errno_t>_symbol(lib, b"zmq_errno")
    z_setsockopt = <setsockopt_t>_symbol(lib, b"zmq_setsockopt")
    z_msg_init_data = <msg_init_data_t>_symbol(lib, b"zmq_msg_init_data")
    z_msg_send = <msg_send_t>_symbol(lib, b"zmq_msg_send")
    z_msg_gets = <msg_gets_t>_symbol(lib, b"zmq_msg_gets")


_load()
