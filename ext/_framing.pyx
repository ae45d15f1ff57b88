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

from framerpc.wire._framing_common import (
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

include "_ndarray_new.pxi"

cnp.import_array()
cdef PyTypeObject *_ndarray_type = <PyTypeObject *>cnp.ndarray

# Arrays of more dimensions take the shared path (which allows 32).
cdef enum: _FAST_NDIM = 8

# the writer (_encode_small, _walk, _pack) and the reader (_decode_small,
# _ExtResolver, _scan_header): one extension, two files
include "_packer.pxi"


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


include "_unpacker.pxi"


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
