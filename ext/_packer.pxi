# Included by _framing.pyx (one extension, as msgpack-python's _cmsgpack
# includes _packer/_unpacker): the writing half. encode() of a small header
# of common values with a msgpack writer of its own (_put), the general
# path's walk over the header (_walk: out-of-band buffers and arrays become
# frame references), and the per-thread msgpack Packer it falls back on.
# Uses the imports and module state of _framing.pyx.


# One Packer per thread: msgpack.packb builds a Packer (and its buffer)
# per call. Packing a walked header runs no Python code, so a thread's
# Packer is never re-entered.
cdef object _local = threading.local()
# A Packer's buffer grows to its largest header and never shrinks: one
# that packed a header larger than this is dropped, not kept per thread.
cdef Py_ssize_t _KEEP_PACKER_BELOW = 64 * 1024


cdef bytes _pack(object packed):
    cdef bytes out
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(buf_size=4096)
    try:
        out = packer.pack(packed)
    except Exception:
        del _local.packer  # its buffer may hold a partial header
        return _pack_header(packed)  # raises the shared SerializationError
    if PyBytes_GET_SIZE(out) >= _KEEP_PACKER_BELOW:
        del _local.packer
    return out


cdef inline bint _is_scalar(object value):
    cdef type kind = type(value)
    return (kind is str or kind is int or kind is float or kind is bool
            or value is None)


cdef extern from "Python.h":
    int Py_EnterRecursiveCall(const char *where) except *  # nonzero (1) on failure
    void Py_LeaveRecursiveCall()


cdef object _walk(object value, list buffers, Py_ssize_t limit):
    # The interpreter's own depth limit: a C recursion has none, and a
    # header nested 200000 deep must raise RecursionError, as the pure
    # engine does, not overflow the C stack.
    Py_EnterRecursiveCall(" while encoding a header")
    try:
        return _walk_value(value, buffers, limit)
    finally:
        Py_LeaveRecursiveCall()


@cython.boundscheck(True)  # value[i]: a list may shrink under a callback
cdef object _walk_value(object value, list buffers, Py_ssize_t limit):
    cdef type kind = type(value)
    cdef dict out
    cdef list items
    cdef Py_ssize_t pos = 0, i, n
    cdef PyObject *key_ptr
    cdef PyObject *item_ptr
    cdef object key, item
    if kind is dict:
        out = {}
        while PyDict_Next(value, &pos, &key_ptr, &item_ptr):
            key = <object>key_ptr
            item = <object>item_ptr
            if type(key) is not str and type(key) is not int:
                key = _check_key(key)
            if not _is_scalar(item):
                item = _walk(item, buffers, limit)
            PyDict_SetItem(out, key, item)
        return out
    if kind is list or kind is tuple:
        n = len(value)
        items = PyList_New(n)
        for i in range(n):
            item = value[i]
            if not _is_scalar(item):
                item = _walk(item, buffers, limit)
            Py_INCREF(item)
            PyList_SET_ITEM(items, i, item)
        return items
    if _is_scalar(value):
        return value
    if kind is bytes and PyBytes_GET_SIZE(value) < limit:
        return value
    if kind is OutOfBand:
        ref = _array_reference((<object>value).value, buffers, 0)
    elif kind is cnp.ndarray:
        ref = _array_reference(value, buffers, limit)
    else:
        ref = None
    if ref is not None:
        return ref
    return _encode_leaf(value, buffers, limit, _walk_py)


cdef inline Py_ssize_t _write_uint(unsigned char *out, Py_ssize_t pos,
                                   Py_ssize_t value) noexcept:
    """msgpack's shortest form of 0 <= value < 2**32 at out[pos:]; new pos."""
    if value <= 0x7F:
        out[pos] = <unsigned char>value
        return pos + 1
    if value <= 0xFF:
        out[pos] = 0xCC
        out[pos + 1] = <unsigned char>value
        return pos + 2
    if value <= 0xFFFF:
        out[pos] = 0xCD
        out[pos + 1] = <unsigned char>(value >> 8)
        out[pos + 2] = <unsigned char>value
        return pos + 3
    out[pos] = 0xCE
    out[pos + 1] = <unsigned char>(value >> 24)
    out[pos + 2] = <unsigned char>(value >> 16)
    out[pos + 3] = <unsigned char>(value >> 8)
    out[pos + 4] = <unsigned char>value
    return pos + 5


# The dtype of the last array sent and its wire string: a device sends
# frames of one dtype, and numpy formats dtype.str anew on every call.
cdef tuple _last_sent_dtype = (None, None)


cdef object _array_reference(object value, list buffers, Py_ssize_t limit):
    """EXT_ARRAY reference to a C-contiguous numeric array of ``limit``
    bytes or more, appended to ``buffers``; None: the shared path decides."""
    payload = _array_payload(value, buffers, limit)
    if payload is None:
        return None
    return _ExtType(EXT_ARRAY, payload)


cdef bytes _array_payload(object value, list buffers, Py_ssize_t limit):
    """The payload of ``_array_reference``: the bytes msgpack would write
    for ``[frame, dtype, shape]``, the array appended to ``buffers`` as is.
    None: the shared path decides."""
    cdef cnp.ndarray arr
    cdef unsigned char payload[5 + 1 + 31 + 1 + 5 * _FAST_NDIM + 1]
    cdef Py_ssize_t pos = 1, i, ndim
    cdef bytes dtype_str
    global _last_sent_dtype
    if type(value) is not cnp.ndarray:
        return None
    arr = <cnp.ndarray>value
    ndim = cnp.PyArray_NDIM(arr)
    if (ndim > _FAST_NDIM or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or cnp.PyArray_NBYTES(arr) < limit):
        return None
    dtype = arr.dtype
    last = _last_sent_dtype  # one read: another thread may replace it
    if (<tuple>last)[0] is dtype:
        dtype_str = (<tuple>last)[1]
    else:
        if dtype.kind not in "biufc":
            return None
        dtype_str = dtype.str.encode()  # formatted anew by numpy on each call
        if len(dtype_str) > 31:
            return None
        _last_sent_dtype = (dtype, dtype_str)
    if len(buffers) > 0xFFFFFFFF:
        return None
    for i in range(ndim):
        if cnp.PyArray_DIM(arr, i) > 0xFFFFFFFF:
            return None
    payload[0] = 0x93  # fixarray of 3
    pos = _write_uint(payload, pos, len(buffers))
    payload[pos] = 0xA0 | len(dtype_str)  # fixstr
    memcpy(payload + pos + 1, <char *>dtype_str, len(dtype_str))
    pos += 1 + len(dtype_str)
    payload[pos] = 0x90 | ndim  # fixarray
    pos += 1
    for i in range(ndim):
        pos = _write_uint(payload, pos, cnp.PyArray_DIM(arr, i))
    buffers.append(arr)
    return PyBytes_FromStringAndSize(<char *>payload, pos)


def _walk_py(value, list buffers, Py_ssize_t limit):
    return _walk(value, buffers, limit)


# -- small headers, written without msgpack -------------------------------
# A call or a reply header is a few dozen bytes. msgpack's Packer, fed by
# _walk's copy of the header, costs several times what writing the bytes
# costs. _put writes the common values (exact builtin types, arrays and
# buffers in their own frame) in msgpack's own encoding, byte for byte
# (tests/wire/test_framing_parity.py); on anything else, or past
# _SMALL_HEADER bytes, encode starts again on the general path.
cdef enum:
    _SMALL_HEADER = 1024
    _MAX_DEPTH = 32
    _PUT_OK = 0
    _PUT_OTHER = 1  # not written: take the general path


cdef inline void _put_be(unsigned char *out, Py_ssize_t pos,
                         unsigned long long value, int size) noexcept:
    cdef int i
    for i in range(size):
        out[pos + i] = <unsigned char>(value >> (8 * (size - 1 - i)))


cdef inline int _put_sized(unsigned char *out, Py_ssize_t *pos, Py_ssize_t size,
                           unsigned char fix, Py_ssize_t fix_max,
                           unsigned char tag8, unsigned char tag16,
                           unsigned char tag32, Py_ssize_t extra) noexcept:
    """The header of a str, bin, array or map of ``size`` (msgpack's
    shortest); ``extra`` bytes must fit after it. tag8 0: no 8-bit form."""
    cdef Py_ssize_t at = pos[0]
    if size < 0 or size > 0xFFFFFFFF or at + 5 + extra > _SMALL_HEADER:
        return _PUT_OTHER
    if size <= fix_max:
        out[at] = fix | <unsigned char>size
        pos[0] = at + 1
    elif tag8 and size <= 0xFF:
        out[at] = tag8
        out[at + 1] = <unsigned char>size
        pos[0] = at + 2
    elif size <= 0xFFFF:
        out[at] = tag16
        _put_be(out, at + 1, size, 2)
        pos[0] = at + 3
    else:
        out[at] = tag32
        _put_be(out, at + 1, size, 4)
        pos[0] = at + 5
    return _PUT_OK


cdef int _put_ext(unsigned char *out, Py_ssize_t *pos, int code,
                  const char *data, Py_ssize_t size) noexcept:
    cdef Py_ssize_t at = pos[0]
    if at + 6 + size > _SMALL_HEADER:
        return _PUT_OTHER
    if size in (1, 2, 4, 8, 16):  # fixext 1 (0xD4) to fixext 16 (0xD8)
        out[at] = 0xD4 + (size > 1) + (size > 2) + (size > 4) + (size > 8)
        at += 1
    elif size <= 0xFF:
        out[at] = 0xC7
        out[at + 1] = <unsigned char>size
        at += 2
    elif size <= 0xFFFF:
        out[at] = 0xC8
        _put_be(out, at + 1, size, 2)
        at += 3
    else:
        out[at] = 0xC9
        _put_be(out, at + 1, size, 4)
        at += 5
    out[at] = <unsigned char>code
    memcpy(out + at + 1, data, size)
    pos[0] = at + 1 + size
    return _PUT_OK


cdef int _put_frame_ref(unsigned char *out, Py_ssize_t *pos, object value,
                        list buffers) except -1:
    """EXT_BUFFER: ``value`` in its own frame, its index as a msgpack uint."""
    cdef unsigned char index[5]
    cdef Py_ssize_t size
    if len(buffers) > 0xFFFFFFFF:
        return _PUT_OTHER
    size = _write_uint(index, 0, len(buffers))
    if _put_ext(out, pos, EXT_BUFFER, <char *>index, size) != _PUT_OK:
        return _PUT_OTHER
    buffers.append(value)
    return _PUT_OK


cdef int _put_int(unsigned char *out, Py_ssize_t *pos, object value) except -1:
    cdef int overflow = 0
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long unsigned_number
    cdef Py_ssize_t at = pos[0]
    if at + 9 > _SMALL_HEADER:
        return _PUT_OTHER
    if overflow < 0:
        return _PUT_OTHER  # below -2**63: msgpack refuses it, in its words
    if overflow > 0:
        unsigned_number = PyLong_AsUnsignedLongLong(value)  # may raise: caught
        out[at] = 0xCF
        _put_be(out, at + 1, unsigned_number, 8)
        pos[0] = at + 9
    elif number < 0:  # msgpack's shortest signed form
        if number >= -32:
            out[at] = <unsigned char>(number & 0xFF)
            pos[0] = at + 1
        elif number >= -0x80:
            out[at] = 0xD0
            _put_be(out, at + 1, <unsigned long long>number, 1)
            pos[0] = at + 2
        elif number >= -0x8000:
            out[at] = 0xD1
            _put_be(out, at + 1, <unsigned long long>number, 2)
            pos[0] = at + 3
        elif number >= -0x80000000:
            out[at] = 0xD2
            _put_be(out, at + 1, <unsigned long long>number, 4)
            pos[0] = at + 5
        else:
            out[at] = 0xD3
            _put_be(out, at + 1, <unsigned long long>number, 8)
            pos[0] = at + 9
    elif number <= 0x7F:  # and its shortest unsigned form
        out[at] = <unsigned char>number
        pos[0] = at + 1
    elif number <= 0xFF:
        out[at] = 0xCC
        out[at + 1] = <unsigned char>number
        pos[0] = at + 2
    elif number <= 0xFFFF:
        out[at] = 0xCD
        _put_be(out, at + 1, number, 2)
        pos[0] = at + 3
    elif number <= 0xFFFFFFFF:
        out[at] = 0xCE
        _put_be(out, at + 1, number, 4)
        pos[0] = at + 5
    else:
        out[at] = 0xCF
        _put_be(out, at + 1, number, 8)
        pos[0] = at + 9
    return _PUT_OK


@cython.boundscheck(True)  # (<list>value)[i]: a list may shrink under a __del__
cdef int _put(unsigned char *out, Py_ssize_t *pos, object value, list buffers,
              Py_ssize_t limit, int depth) except -1:
    """Write ``value`` at out[pos] as the general path would pack it."""
    cdef type kind = type(value)
    cdef Py_ssize_t at = pos[0], size, i, count
    cdef const char *data
    cdef double number
    cdef unsigned long long bits
    cdef PyObject *key_ptr
    cdef PyObject *item_ptr
    cdef Py_ssize_t dict_pos = 0
    if depth > _MAX_DEPTH:
        return _PUT_OTHER
    if value is None or kind is bool:
        if at + 1 > _SMALL_HEADER:
            return _PUT_OTHER
        out[at] = 0xC0 if value is None else (0xC3 if value is True else 0xC2)
        pos[0] = at + 1
        return _PUT_OK
    if kind is int:
        return _put_int(out, pos, value)
    if kind is float:
        if at + 9 > _SMALL_HEADER:
            return _PUT_OTHER
        number = value
        memcpy(&bits, &number, 8)
        out[at] = 0xCB
        _put_be(out, at + 1, bits, 8)
        pos[0] = at + 9
        return _PUT_OK
    if kind is str:
        data = PyUnicode_AsUTF8AndSize(value, &size)  # a lone surrogate raises
        if _put_sized(out, pos, size, 0xA0, 31, 0xD9, 0xDA, 0xDB, size) != _PUT_OK:
            return _PUT_OTHER
        memcpy(out + pos[0], data, size)
        pos[0] += size
        return _PUT_OK
    if kind is bytes:
        size = PyBytes_GET_SIZE(value)
        if size >= limit:
            return _put_frame_ref(out, pos, value, buffers)
        if _put_sized(out, pos, size, 0, -1, 0xC4, 0xC5, 0xC6, size) != _PUT_OK:
            return _PUT_OTHER
        memcpy(out + pos[0], PyBytes_AS_STRING(value), size)
        pos[0] += size
        return _PUT_OK
    if kind is list or kind is tuple:
        count = len(value)
        if _put_sized(out, pos, count, 0x90, 15, 0, 0xDC, 0xDD, count) != _PUT_OK:
            return _PUT_OTHER
        for i in range(count):
            if i >= len(value):  # shrunk by a __del__ (see below)
                return _PUT_OTHER
            # owned: writing an array may free a dtype, and run its __del__
            item = (<list>value)[i] if kind is list else (<tuple>value)[i]
            if _put(out, pos, item, buffers, limit, depth + 1) != _PUT_OK:
                return _PUT_OTHER
        return _PUT_OK
    if kind is dict:
        count = len(<dict>value)
        if _put_sized(out, pos, count, 0x80, 15, 0, 0xDE, 0xDF, 2 * count) != _PUT_OK:
            return _PUT_OTHER
        i = 0
        while PyDict_Next(value, &dict_pos, &key_ptr, &item_ptr):
            key = <object>key_ptr
            item = <object>item_ptr  # owned, as above
            if type(key) is not str and type(key) is not int:
                return _PUT_OTHER  # the general path checks it
            if (_put(out, pos, key, buffers, limit, depth + 1) != _PUT_OK
                    or _put(out, pos, item, buffers, limit, depth + 1) != _PUT_OK):
                return _PUT_OTHER
            i += 1
        return _PUT_OK if i == count else _PUT_OTHER
    if kind is cnp.ndarray or kind is OutOfBand:
        inner = (<object>value).value if kind is OutOfBand else value
        if type(inner) is cnp.ndarray:
            payload = _array_payload(inner, buffers, 0 if kind is OutOfBand else limit)
            if payload is None:
                return _PUT_OTHER
            return _put_ext(out, pos, EXT_ARRAY, PyBytes_AS_STRING(payload),
                            PyBytes_GET_SIZE(payload))
        if kind is OutOfBand and (type(inner) is bytes or type(inner) is bytearray):
            return _put_frame_ref(out, pos, inner, buffers)
        # the documented buffer-method idiom, memoryview(array): as is when
        # contiguous (the shared path copies the others); through the
        # general path it cost 2.8 us more per reply than the array itself
        if kind is OutOfBand and type(inner) is memoryview and inner.c_contiguous:
            return _put_frame_ref(out, pos, inner, buffers)
    return _PUT_OTHER


cdef list _encode_small(dict header, Py_ssize_t limit):
    """encode() of a small header of common values; None otherwise."""
    cdef unsigned char out[_SMALL_HEADER]
    cdef Py_ssize_t pos = 0
    cdef list buffers = [None]
    try:
        if _put(out, &pos, header, buffers, limit, 0) != _PUT_OK:
            return None
    except (UnicodeEncodeError, OverflowError):
        return None  # the general path raises its SerializationError
    buffers[0] = PyBytes_FromStringAndSize(<char *>out, pos)
    return buffers
