# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled framing: same functions and behaviour as ``framerpc._framing_py``.

Compiled here: the hot loops (walking the header's containers and
scalars, the decode driver) and the common frame references of a received
header (a buffer or an array in its own frame), which are read without
msgpack and become numpy arrays through numpy's C API. Anything unusual
in a reference, and the other rare paths (bytes-like values to encode,
inline arrays, limits), go to the shared code of
``framerpc._framing_common``, so errors are the same in both engines.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF

cimport cython
cimport numpy as cnp
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from libc.stdint cimport SIZE_MAX
from libc.string cimport memcpy

import threading

import msgpack

from framerpc._framing_common import (
    EXT_ARRAY,
    EXT_BUFFER,
    EXT_INLINE_ARRAY,
    INLINE_LIMIT,
    MAX_FRAMES,
    MAX_HEADER_SIZE,
    OutOfBand,
    check_decoded,
    check_key,
    encode_leaf,
    header_view,
    pack_header,
    resolve_ext,
)
from framerpc.errors import ProtocolError

__all__ = [
    "EXT_BUFFER",
    "EXT_ARRAY",
    "EXT_INLINE_ARRAY",
    "INLINE_LIMIT",
    "MAX_FRAMES",
    "MAX_HEADER_SIZE",
    "OutOfBand",
    "encode",
    "decode",
]

cdef object _pack_header = pack_header
cdef object _unpackb = msgpack.unpackb
cdef object _check_key = check_key
cdef object _encode_leaf = encode_leaf
cdef object _resolve_ext = resolve_ext
cdef object _ExtType = msgpack.ExtType

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


@cython.boundscheck(True)  # value[i]: a list may shrink under a callback
cdef object _walk(object value, list buffers, Py_ssize_t limit):
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
    bytes or more, appended to ``buffers`` as is: the bytes msgpack would
    write for ``[frame, dtype, shape]``. None: the shared path decides."""
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
    return _ExtType(EXT_ARRAY, PyBytes_FromStringAndSize(<char *>payload, pos))


def _walk_py(value, list buffers, Py_ssize_t limit):
    return _walk(value, buffers, limit)


def encode(dict header, Py_ssize_t limit=INLINE_LIMIT):
    """Turn a header dict into the frames of one message.

    See ``framerpc._framing_py.encode``: same arguments, result and errors.
    """
    cdef list buffers = [None]
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


cdef object _array_ext(bytes data, object frames, set used):
    """EXT_ARRAY ``[frame, dtype, shape]`` in its usual form, as a read-only
    array over the frame (no copy); None for anything else."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos = 1, index, length, ndim, i
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
            arr = _array_ext(data, self.frames, self.used)
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


def decode(frames, Py_ssize_t max_frames=MAX_FRAMES,
           Py_ssize_t max_header=MAX_HEADER_SIZE):
    """Turn the frames of one message back into its header dict.

    See ``framerpc._framing_py.decode``: same arguments, result and errors.
    """
    if type(frames) is list and 0 < len(frames) <= max_frames:
        head = frames[0]
        if type(head) is not bytes:
            head = PyMemoryView_FromObject(head)
        if len(head) > max_header:
            head = header_view(frames, max_frames, max_header)  # raises
    else:
        head = header_view(frames, max_frames, max_header)
    cdef _ExtResolver resolver = _ExtResolver(frames)
    try:
        header = _unpackb(head, strict_map_key=False, ext_hook=resolver)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    if type(header) is dict and len(resolver.used) == len(frames) - 1:
        return header
    return check_decoded(header, frames, resolver.used)  # raises
