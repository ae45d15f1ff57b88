# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled framing: same functions and behaviour as ``framerpc._framing_py``.

Compiled here: a msgpack writer and reader of their own for small headers
of common values (a call or a reply: the hot path), the general path's hot
loops (walking the header's containers and scalars, the decode driver),
and the common frame references of a received header (a buffer or an
array in its own frame), which are read without msgpack and become numpy
arrays through numpy's C API. Anything unusual in a header or a
reference, and the other rare paths (bytes-like values to encode, inline
arrays, limits), go to msgpack and the shared code of
``framerpc._framing_common``, so results and errors are the same in both
engines.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBuffer_Release
from cpython.buffer cimport PyObject_GetBuffer
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF

cimport cython
cimport numpy as cnp
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from libc.stdint cimport SIZE_MAX, uint32_t
from libc.string cimport memcpy

import threading

import msgpack
import numpy as np

from framerpc._framing_common import (
    EXT_ARRAY,
    EXT_BUFFER,
    EXT_INLINE_ARRAY,
    INLINE_LIMIT,
    EXT_COST,
    MAX_DEPTH,
    MAX_FRAMES,
    MAX_HEADER_SIZE,
    MAX_OBJECTS,
    SCAN_ABOVE,
    OutOfBand,
    check_decoded,
    check_key,
    encode_leaf,
    header_view,
    pack_header,
    resolve_ext,
    too_deep,
    too_many_objects,
    unpackb_large,
)
from framerpc.errors import ProtocolError

__all__ = [
    "EXT_BUFFER",
    "EXT_ARRAY",
    "EXT_INLINE_ARRAY",
    "INLINE_LIMIT",
    "MAX_FRAMES",
    "MAX_HEADER_SIZE",
    "MAX_OBJECTS",
    "MAX_DEPTH",
    "OutOfBand",
    "encode",
    "decode",
]

cdef object _pack_header = pack_header
cdef object _unpackb = msgpack.unpackb
cdef object _unpackb_large = unpackb_large
cdef object _check_key = check_key
cdef object _encode_leaf = encode_leaf
cdef object _resolve_ext = resolve_ext
cdef object _ExtType = msgpack.ExtType
cdef object _np_dtype = np.dtype

cdef extern from "numpy/arrayobject.h":
    # declared here: numpy's Cython declarations leave it commented out
    object PyArray_NewFromDescr(PyTypeObject *subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp *dims, cnp.npy_intp *strides,
                                void *data, int flags, PyObject *obj)

cnp.import_array()
cdef PyTypeObject *_ndarray_type = <PyTypeObject *>cnp.ndarray

# Arrays of more dimensions take the shared path (which allows 32).
cdef enum: _FAST_NDIM = 8

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
# (tests/test_framing_parity.py); on anything else, or past
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


def encode(header, Py_ssize_t limit=INLINE_LIMIT):
    """Turn a header dict into the frames of one message.

    See ``framerpc._framing_py.encode``: same arguments, result and errors.
    """
    cdef list buffers = None
    if type(header) is dict:
        buffers = _encode_small(header, limit)
        if buffers is not None:
            return buffers
    buffers = [None]
    packed = _walk(header, buffers, limit)
    buffers[0] = _pack(packed)
    return buffers


# Received dtypes the shared path has checked, by their wire string:
# np.dtype(str) parses the string on every call. Bounded: a peer sending
# ever new dtype strings must not grow it.
cdef dict _dtypes = {}
cdef Py_ssize_t _MAX_CACHED_DTYPES = 64


cdef inline Py_ssize_t _read_uint(const unsigned char *p, Py_ssize_t n,
                                  Py_ssize_t *pos) noexcept:
    """A msgpack unsigned int of up to 32 bits at pos (advanced), or -1."""
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char tag
    if i >= n:
        return -1
    tag = p[i]
    if tag <= 0x7F:
        pos[0] = i + 1
        return tag
    if tag == 0xCC and i + 1 < n:
        pos[0] = i + 2
        return p[i + 1]
    if tag == 0xCD and i + 2 < n:
        pos[0] = i + 3
        return (p[i + 1] << 8) | p[i + 2]
    if tag == 0xCE and i + 4 < n:
        pos[0] = i + 5
        return ((<Py_ssize_t>p[i + 1] << 24) | (p[i + 2] << 16)
                | (p[i + 3] << 8) | p[i + 4])
    return -1


cdef object _take_frame(object frames, Py_ssize_t index, set used):
    """Read-only memoryview of frame ``index``, marked used; None when the
    shared path must judge the reference (out of range or used twice)."""
    if index < 1 or index >= len(frames) or index in used:
        return None
    used.add(index)
    return PyMemoryView_FromObject(frames[index]).toreadonly()


cdef object _array_ext(const unsigned char *p, Py_ssize_t n, object frames,
                       set used):
    """EXT_ARRAY ``[frame, dtype, shape]`` (its payload, p[:n]) in its usual
    form, as a read-only array over the frame (no copy); None otherwise."""
    cdef Py_ssize_t pos = 1, index, length, ndim, i
    cdef Py_ssize_t count = 1, dim
    cdef cnp.npy_intp dims[_FAST_NDIM]
    cdef cnp.dtype dtype
    if n < 1 or p[0] != 0x93:  # fixarray of 3
        return None
    index = _read_uint(p, n, &pos)
    if index < 0 or pos >= n or not 0xA0 <= p[pos] <= 0xBF:  # fixstr dtype
        return None
    length = p[pos] & 0x1F
    if pos + 1 + length >= n:
        return None
    cached = _dtypes.get(PyBytes_FromStringAndSize(<char *>p + pos + 1, length))
    if cached is None:  # first sight: the shared path checks it
        return None
    dtype = <cnp.dtype>cached
    pos += 1 + length
    if not 0x90 <= p[pos] <= 0x90 + _FAST_NDIM:  # fixarray shape
        return None
    ndim = p[pos] & 0x0F
    pos += 1
    for i in range(ndim):
        dim = _read_uint(p, n, &pos)
        if dim < 0 or (dim != 0 and count > (<Py_ssize_t>(SIZE_MAX >> 1)) // dim):
            return None
        dims[i] = dim
        count *= dim
    if pos != n or index < 1 or index >= len(frames) or index in used:
        return None
    view = PyMemoryView_FromObject(frames[index])
    # in bytes, not items, and contiguous: as the shared path checks
    if (not view.c_contiguous
            or dtype.itemsize and count > (<Py_ssize_t>(SIZE_MAX >> 1)) // dtype.itemsize
            or count * dtype.itemsize != view.nbytes):
        return None
    used.add(index)
    view = view.toreadonly()
    cnp.Py_INCREF(dtype)  # PyArray_NewFromDescr steals it
    arr = PyArray_NewFromDescr(
        _ndarray_type, dtype, <int>ndim, dims, NULL,
        PyMemoryView_GET_BUFFER(view).buf, 0, NULL)  # flags 0: read-only
    cnp.Py_INCREF(view)  # PyArray_SetBaseObject steals it: the view keeps
    cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, view)  # the frame alive
    return arr


cdef _remember_dtype(bytes data, object arr):
    if len(_dtypes) >= _MAX_CACHED_DTYPES:
        return
    spec = _unpackb(data)
    # Only a string that names the array's own dtype: "(2,)<i4" decodes to
    # int32 arrays with one more dimension, and must not read as int32.
    if _np_dtype(spec[1]) == arr.dtype:
        _dtypes[(<str>spec[1]).encode()] = arr.dtype


cdef class _ExtResolver:
    """The ext_hook of one decode: resolves references into its frames."""

    cdef object frames
    cdef set used

    def __init__(self, frames):
        self.frames = frames
        self.used = set()

    def __call__(self, int code, bytes data):
        cdef const unsigned char *p
        if code == EXT_ARRAY:
            arr = _array_ext(<const unsigned char *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data), self.frames, self.used)
            if arr is None:
                arr = _resolve_ext(code, data, self.frames, self.used)
                _remember_dtype(data, arr)
            return arr
        if code == EXT_BUFFER and PyBytes_GET_SIZE(data) == 1:
            p = <const unsigned char *>PyBytes_AS_STRING(data)
            if p[0] <= 0x7F:  # a positive fixint: the frame index
                view = _take_frame(self.frames, p[0], self.used)
                if view is not None:
                    return view
        return _resolve_ext(code, data, self.frames, self.used)


# -- small headers, read without msgpack ----------------------------------
# The reading twin of _put: _get reads the common msgpack values into the
# objects msgpack.unpackb would build; anything else (and an unusual frame
# reference, bad UTF-8, trailing bytes...) sends decode to the general
# path, which then gives the result or the error. Every read is checked
# against the end of the header first.
cdef object _NOT_SMALL = object()  # _get's "take the general path"
cdef Py_ssize_t _SMALL_READ = 64 * 1024  # larger headers: msgpack at once


cdef inline unsigned long long _get_be(const unsigned char *p, int size) noexcept:
    cdef unsigned long long value = 0
    cdef int i
    for i in range(size):
        value = (value << 8) | p[i]
    return value


cdef enum _Sized:
    _STR, _BIN, _EXT, _ARRAY, _MAP


cdef object _get(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                 object frames, set used, int depth):
    cdef Py_ssize_t at = pos[0], size = 0
    cdef unsigned char tag
    cdef int width = 0, code
    cdef _Sized kind
    cdef unsigned long long bits
    cdef uint32_t bits32
    cdef float single
    cdef double double_value
    if at >= n or depth > _MAX_DEPTH:
        return _NOT_SMALL
    tag = p[at]
    at += 1
    # values without a size
    if tag <= 0x7F or tag >= 0xE0:  # positive and negative fixint
        pos[0] = at
        return <long><signed char>tag if tag >= 0xE0 else <long>tag
    if tag == 0xC0:
        pos[0] = at
        return None
    if tag == 0xC2 or tag == 0xC3:
        pos[0] = at
        return tag == 0xC3
    if tag == 0xCA or tag == 0xCB:  # float 32, 64
        width = 4 if tag == 0xCA else 8
        if width > n - at:
            return _NOT_SMALL
        bits = _get_be(p + at, width)
        pos[0] = at + width
        if width == 4:
            bits32 = <uint32_t>bits
            memcpy(&single, &bits32, 4)
            return <double>single
        memcpy(&double_value, &bits, 8)
        return double_value
    if 0xCC <= tag <= 0xD3:  # uint, then int, of 1, 2, 4, 8 bytes
        width = 1 << ((tag - 0xCC) & 3)
        if width > n - at:
            return _NOT_SMALL
        bits = _get_be(p + at, width)
        pos[0] = at + width
        if tag <= 0xCF:
            return bits
        if width == 1:
            return <long><signed char>bits
        if width == 2:
            return <long><short>bits
        if width == 4:
            return <long><int>bits
        return <long long>bits
    # sized values: the size in the tag, or in the next 1, 2 or 4 bytes
    if tag <= 0x8F:
        kind, size = _MAP, tag & 0x0F
    elif tag <= 0x9F:
        kind, size = _ARRAY, tag & 0x0F
    elif tag <= 0xBF:
        kind, size = _STR, tag & 0x1F
    elif 0xD4 <= tag <= 0xD8:  # fixext 1, 2, 4, 8, 16
        kind, size = _EXT, 1 << (tag - 0xD4)
    else:
        if 0xC4 <= tag <= 0xC6:
            kind, width = _BIN, 1 << (tag - 0xC4)
        elif 0xC7 <= tag <= 0xC9:
            kind, width = _EXT, 1 << (tag - 0xC7)
        elif 0xD9 <= tag <= 0xDB:
            kind, width = _STR, 1 << (tag - 0xD9)
        elif tag == 0xDC or tag == 0xDD:
            kind, width = _ARRAY, 2 if tag == 0xDC else 4
        elif tag == 0xDE or tag == 0xDF:
            kind, width = _MAP, 2 if tag == 0xDE else 4
        else:  # 0xC1: never used
            return _NOT_SMALL
        if width > n - at:
            return _NOT_SMALL
        size = <Py_ssize_t>_get_be(p + at, width)
        at += width
    if kind == _STR:
        if size > n - at:
            return _NOT_SMALL
        pos[0] = at + size
        return PyUnicode_DecodeUTF8(<const char *>p + at, size, NULL)  # bad: raises
    if kind == _BIN:
        if size > n - at:
            return _NOT_SMALL
        pos[0] = at + size
        return PyBytes_FromStringAndSize(<const char *>p + at, size)
    if kind == _EXT:  # a type byte, then the payload: a frame reference
        if size >= n - at:
            return _NOT_SMALL
        code = <signed char>p[at]
        at += 1
        pos[0] = at + size
        if code == EXT_ARRAY:
            value = _array_ext(p + at, size, frames, used)
        elif code == EXT_BUFFER and size == 1 and p[at] <= 0x7F:
            value = _take_frame(frames, p[at], used)
        else:
            value = None
        return _NOT_SMALL if value is None else value
    pos[0] = at
    if kind == _ARRAY:
        return _get_array(p, n, pos, size, frames, used, depth)
    return _get_map(p, n, pos, size, frames, used, depth)


cdef object _get_array(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                       Py_ssize_t count, object frames, set used, int depth):
    cdef Py_ssize_t i
    cdef list items
    if count > n - pos[0]:  # an item takes a byte at least
        return _NOT_SMALL
    items = PyList_New(count)  # a slot left empty is fine to free
    for i in range(count):
        item = _get(p, n, pos, frames, used, depth + 1)
        if item is _NOT_SMALL:
            return _NOT_SMALL
        Py_INCREF(item)
        PyList_SET_ITEM(items, i, item)
    return items


cdef object _get_map(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                     Py_ssize_t count, object frames, set used, int depth):
    cdef Py_ssize_t i
    cdef dict mapping = {}
    if count > (n - pos[0]) // 2:  # a key and a value take two bytes at least
        return _NOT_SMALL
    for i in range(count):
        key = _get(p, n, pos, frames, used, depth + 1)
        if type(key) is not str and type(key) is not int:
            return _NOT_SMALL  # other keys: the general path
        item = _get(p, n, pos, frames, used, depth + 1)
        if item is _NOT_SMALL:
            return _NOT_SMALL
        PyDict_SetItem(mapping, key, item)
    return mapping


cdef object _decode_small(object head, object frames, Py_ssize_t max_header):
    """decode() of a small header of common values; None otherwise."""
    cdef Py_buffer view
    cdef Py_ssize_t pos = 0
    cdef set used = set()
    # C-contiguous, with its item size: msgpack refuses multi-byte items
    PyObject_GetBuffer(head, &view, PyBUF_ND | PyBUF_FORMAT)
    try:
        if view.itemsize != 1 or view.len > max_header or view.len > _SMALL_READ:
            return None
        header = _get(<const unsigned char *>view.buf, view.len, &pos, frames,
                      used, 0)
        if (type(header) is dict and pos == view.len
                and len(used) == len(frames) - 1):
            return header
        return None
    finally:
        PyBuffer_Release(&view)


# -- limits of a large header, checked before msgpack builds anything ------
# A linear walk over the msgpack bytes that counts objects and measures
# nesting without creating any: msgpack.unpackb would build one Python
# object per byte of a header of empty lists (70 bytes of memory each).
cdef Py_ssize_t _scan_above = SCAN_ABOVE
cdef Py_ssize_t _ext_cost = EXT_COST
cdef enum:
    _SCAN_STACK = 1024  # msgpack's own nesting limit: deeper fails there


cdef int _scan(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_objects,
               Py_ssize_t max_depth) except -1:
    """Raise MessageTooLargeError if the header at p[:n] holds more than
    ``max_objects`` objects or nests deeper than ``max_depth``, with the
    pure engine's counts (bounded_unpackb); 0 otherwise. A malformed header
    ends the scan: msgpack then says what is wrong."""
    cdef Py_ssize_t left[_SCAN_STACK + 1]  # items still due per open container
    cdef Py_ssize_t pos = 0, objects = 0, size, items, width
    cdef Py_ssize_t depth = 0
    cdef unsigned char tag
    while pos < n:
        tag = p[pos]
        pos += 1
        items = -1  # not a container
        size = 0  # bytes of payload to skip
        if tag <= 0x7F or tag >= 0xE0 or 0xC0 <= tag <= 0xC3:
            pass  # fixint, nil, bool (0xC1 fails in msgpack)
        elif tag <= 0x8F:
            items = 2 * (tag & 0x0F)
        elif tag <= 0x9F:
            items = tag & 0x0F
        elif tag <= 0xBF:
            size = tag & 0x1F
        elif tag == 0xCA or tag == 0xCB:
            size = 4 if tag == 0xCA else 8
        elif 0xCC <= tag <= 0xD3:
            size = 1 << ((tag - 0xCC) & 3)
        elif 0xD4 <= tag <= 0xD8:  # fixext: a type byte and the payload
            objects += _ext_cost - 1
            size = 1 + (1 << (tag - 0xD4))
        else:
            if 0xC4 <= tag <= 0xC6:  # bin 8, 16, 32
                width = 1 << (tag - 0xC4)
            elif 0xC7 <= tag <= 0xC9:  # ext 8, 16, 32
                width = 1 << (tag - 0xC7)
                objects += _ext_cost - 1
            elif 0xD9 <= tag <= 0xDB:  # str 8, 16, 32
                width = 1 << (tag - 0xD9)
            else:  # array 16, 32 (0xDC, 0xDD), map 16, 32 (0xDE, 0xDF)
                width = 2 if tag == 0xDC or tag == 0xDE else 4
            if width > n - pos:
                return 0
            size = <Py_ssize_t>_get_be(p + pos, <int>width)
            pos += width
            if tag >= 0xDC:
                items = size if tag <= 0xDD else 2 * size
                size = 0
            elif 0xC7 <= tag <= 0xC9:
                size += 1  # the type byte
        objects += 1
        if objects > max_objects:
            raise too_many_objects(max_objects)
        if items >= 0:  # a container, at depth + 1
            if depth + 1 > max_depth:
                raise too_deep(max_depth)
            if items > max_objects - objects:  # declared: refused at once
                raise too_many_objects(max_objects)
            if items > 0:
                if depth >= _SCAN_STACK:
                    return 0  # msgpack refuses this nesting itself
                depth += 1
                left[depth] = items
                continue
        else:
            if size > n - pos:
                return 0
            pos += size
        # a value is complete: close every container it completes
        while depth > 0:
            left[depth] -= 1
            if left[depth] > 0:
                break
            depth -= 1
        if depth == 0:
            return 0  # the header is read (trailing bytes: msgpack says so)
    return 0


cdef int _scan_header(object head, Py_ssize_t max_objects,
                      Py_ssize_t max_depth) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(head, &view, PyBUF_SIMPLE)
    try:
        _scan(<const unsigned char *>view.buf, view.len, max_objects, max_depth)
    finally:
        PyBuffer_Release(&view)
    return 0


def decode(frames, Py_ssize_t max_frames=MAX_FRAMES,
           Py_ssize_t max_header=MAX_HEADER_SIZE,
           Py_ssize_t max_objects=MAX_OBJECTS, Py_ssize_t max_depth=MAX_DEPTH):
    """Turn the frames of one message back into its header dict.

    See ``framerpc._framing_py.decode``: same arguments, result and errors.
    """
    if type(frames) is list and 0 < len(frames) <= max_frames:
        head = frames[0]
        try:
            header = _decode_small(head, frames, max_header)
        except Exception:  # bad UTF-8, no simple buffer...: the general path
            header = None  # gives the result or words the error
        if header is not None:
            return header
        if type(head) is not bytes:
            head = PyMemoryView_FromObject(head)
        if len(head) > max_header:
            head = header_view(frames, max_frames, max_header)  # raises
    else:
        head = header_view(frames, max_frames, max_header)
    cdef _ExtResolver resolver = _ExtResolver(frames)
    cdef bint large = len(head) > _scan_above
    if large:
        _scan_header(head, max_objects, max_depth)
    try:
        if large:
            header = _unpackb_large(head, ext_hook=resolver)
        else:
            header = _unpackb(head, strict_map_key=False, ext_hook=resolver)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    if type(header) is dict and len(resolver.used) == len(frames) - 1:
        return header
    return check_decoded(header, frames, resolver.used)  # raises
