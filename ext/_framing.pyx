# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled framing: same functions and behaviour as ``framerpc._framing_py``.

Only the hot loops live here (walking the header's containers and
scalars, the decode driver); the rare paths (arrays, bytes-like values,
ext references, limits) are the shared ones of ``framerpc._framing_common``.
"""

from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

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


cdef inline bint _is_scalar(object value):
    cdef type kind = type(value)
    return (kind is str or kind is int or kind is float or kind is bool
            or value is None)


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
    return _encode_leaf(value, buffers, limit, _walk_py)


def _walk_py(value, list buffers, Py_ssize_t limit):
    return _walk(value, buffers, limit)


def encode(dict header, Py_ssize_t limit=INLINE_LIMIT):
    """Turn a header dict into the frames of one message.

    See ``framerpc._framing_py.encode``: same arguments, result and errors.
    """
    cdef list buffers = [None]
    packed = _walk(header, buffers, limit)
    buffers[0] = _pack_header(packed)
    return buffers


cdef class _ExtResolver:
    """The ext_hook of one decode: resolves references into its frames."""

    cdef object frames
    cdef set used

    def __init__(self, frames):
        self.frames = frames
        self.used = set()

    def __call__(self, int code, data):
        return _resolve_ext(code, data, self.frames, self.used)


def decode(frames, Py_ssize_t max_frames=MAX_FRAMES,
           Py_ssize_t max_header=MAX_HEADER_SIZE):
    """Turn the frames of one message back into its header dict.

    See ``framerpc._framing_py.decode``: same arguments, result and errors.
    """
    head = header_view(frames, max_frames, max_header)
    cdef _ExtResolver resolver = _ExtResolver(frames)
    try:
        header = _unpackb(head, strict_map_key=False, ext_hook=resolver)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    return check_decoded(header, frames, resolver.used)
