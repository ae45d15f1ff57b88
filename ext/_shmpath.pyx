# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled shared-memory hot path, the twin of ``framerpc.wire._shmpath_py``
(see there): a reference becomes a read-only array made through numpy's C
API whose base is one ``Lease`` (no interface dict, no weak reference, a
C count of the live ones), and the reply and the call that carry
references and releases are built in C. Every check of
``framerpc.wire.shm.parse_ref`` is made here too, with its messages;
anything unusual goes to ``parse_ref`` itself, which says what is wrong.
"""

cimport cython
cimport numpy as cnp
from cpython.ref cimport PyObject, PyTypeObject
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy

import numpy as np

from framerpc.errors import ProtocolError
from framerpc.wire.framing import encode
from framerpc.wire.messages import (
    KEY_ARGS,
    KEY_EVENT,
    KEY_ID,
    KEY_INFO,
    KEY_KWARGS,
    KEY_METHOD,
    KEY_OK,
    KEY_VALUE,
    KEY_VERSION,
    PROTOCOL_VERSION,
)
from framerpc.wire.shm import (KEY_RELEASES, MAX_RELEASES, REF_KEY, SIGNAL_SLOT_BASE,
                               parse_ref)
from framerpc.wire._shmpath_py import copy_into as _copy_into_py

__all__ = ["Lease", "Tally", "call_frames", "copier_stats", "copy_into", "hold_copier",
           "lease_array", "parse_releases", "ref_reply", "release_copier", "resolve", "split_releases"]

include "_ndarray_new.pxi"

# the one copy split between the caller and a worker thread (see the header)
cdef extern from "_parcopy.h" nogil:
    void pc_copy(char *dst, const char *src, size_t n)
    int pc_hold()
    int pc_release()
    void pc_configure(size_t threshold, size_t chunk, int spin, int mode, int avoid)
    void pc_read(unsigned long *out)

cnp.import_array()
cdef PyTypeObject *_ndarray_type = <PyTypeObject *>cnp.ndarray

cdef object _encode = encode
cdef object _parse_ref = parse_ref
cdef object _SIGNAL_SLOT_BASE = SIGNAL_SLOT_BASE
cdef object _np_dtype = np.dtype
cdef object _PROTOCOL_VERSION = PROTOCOL_VERSION
cdef str _K_VERSION = KEY_VERSION
cdef str _K_EVENT = KEY_EVENT
cdef str _K_ID = KEY_ID
cdef str _K_METHOD = KEY_METHOD
cdef str _K_ARGS = KEY_ARGS
cdef str _K_KWARGS = KEY_KWARGS
cdef str _K_VALUE = KEY_VALUE
cdef str _K_OK = KEY_OK
cdef str _K_INFO = KEY_INFO
cdef str _K_RELEASES = KEY_RELEASES
cdef str _REF_KEY = REF_KEY
cdef Py_ssize_t _MAX_RELEASES = MAX_RELEASES
cdef str _METHOD_CALL = "METHOD_CALL"

# parse_ref's bounds (framerpc.wire.shm)
cdef enum:
    _MAX_DIMS = 32
cdef long long _MAX_SPAN = 1LL << 62
# the same bound as an int object: a shape item (an int object) compared
# with the C one became a new int object at each comparison
cdef object _MAX_SPAN_INT = _MAX_SPAN
# checked dtypes by their wire string: np.dtype(str) parses it every call;
# bounded, as a peer may send ever new strings
cdef dict _dtypes = {}
cdef enum:
    _MAX_CACHED_DTYPES = 64
# a sent array's dtype.str by its descriptor's address: numpy formats the
# string anew at each read (printf: about 1k instructions a reply); each
# entry keeps its dtype alive, so an address cannot name another one.
# Bounded: arrays of ever new dtypes (structured ones) miss it.
cdef dict _typestrs = {}


cdef class Tally:
    """The leases of one client still alive (``len``), and the signal slots
    among them (``signal_slots``)."""

    cdef Py_ssize_t live
    cdef set signals

    def __cinit__(self):
        self.signals = set()

    def __len__(self):
        return self.live

    def signal_slots(self):
        """See ``framerpc.wire._shmpath_py.Tally.signal_slots``."""
        return list(self.signals)


@cython.no_gc_clear  # the release must survive a collection of a cycle
@cython.final
cdef class Lease:
    """The base of one received array: queues the slot's release when the
    array and all its views are gone."""

    # readable as the pure twin's: the mapping (kept while the array lives)
    # and the (slot, generation) pair
    cdef readonly object _map
    cdef readonly object _slot
    cdef object _pending
    cdef Tally _tally
    cdef bint _signal

    def __dealloc__(self):
        # any thread, on garbage collection: deque.append needs no lock
        if self._tally is not None:
            self._tally.live -= 1
            if self._signal:
                self._tally.signals.discard(self._slot)
        if self._pending is not None:
            self._pending.append(self._slot)


cdef inline bint _is_count(object n):
    return type(n) is int and n >= 0


cdef cnp.dtype _checked_dtype(object dtype):
    """The dtype a reference names, if parse_ref accepts it; else None."""
    cached = _dtypes.get(dtype) if type(dtype) is str else None
    if cached is not None:
        return <cnp.dtype>cached
    if type(dtype) is not str or len(<str>dtype) >= 16:
        return None
    try:
        kind = _np_dtype(dtype)
    except TypeError:
        return None
    if (kind.hasobject or kind.fields is not None or kind.subdtype is not None
            or kind.itemsize == 0):
        return None
    if len(_dtypes) < _MAX_CACHED_DTYPES:
        _dtypes[dtype] = kind
    return <cnp.dtype>kind


def resolve(value, lookup, pending, Tally tally):
    """See ``framerpc.wire._shmpath_py.resolve``."""
    cdef cnp.npy_intp dims[_MAX_DIMS]
    cdef Py_ssize_t ndim, i
    cdef cnp.dtype kind
    cdef long long count = 1, span = 1, d, limit
    cdef uintptr_t address
    cdef Lease lease
    # typed: a C dict lookup, not a call of the method get
    fields = (<dict>value).get(_REF_KEY) if type(value) is dict else None
    if type(fields) is not list or len(<list>fields) != 7:
        _parse_ref(value)  # raises what is wrong
    segment, offset, nbytes, slot, generation, dtype, shape = <list>fields
    kind = _checked_dtype(dtype)
    if (type(segment) is not str or len(<str>segment) > 255
            or not (_is_count(offset) and _is_count(nbytes) and _is_count(slot)
                    and _is_count(generation))
            or type(shape) is not list or len(<list>shape) > _MAX_DIMS
            or kind is None):
        _parse_ref(value)
        raise AssertionError("parse_ref accepted what resolve refused")
    ndim = len(<list>shape)
    # parse_ref's bound: span * itemsize <= 2**62, tested without overflow
    limit = _MAX_SPAN // kind.itemsize
    for i in range(ndim):
        item = (<list>shape)[i]
        if type(item) is not int or item < 0 or item > _MAX_SPAN_INT:
            return _checked(value)
        d = item
        dims[i] = <cnp.npy_intp>d
        if d:
            if d > limit // span:
                return _checked(value)
            span *= d
        count *= d
    if count * kind.itemsize != nbytes:
        return _checked(value)
    pair = (slot, generation)
    try:
        mapped = lookup(segment)
    except (OSError, ValueError) as exc:
        pending.append(pair)
        raise ProtocolError(f"cannot map shared-memory reply: {exc}") from None
    if offset + nbytes > mapped.size:
        pending.append(pair)
        raise ProtocolError("shared-memory reply beyond its segment")
    address = <uintptr_t>(<object>mapped.address + offset)
    lease = Lease.__new__(Lease)
    lease._map = mapped
    lease._slot = pair
    lease._pending = pending
    lease._tally = tally
    tally.live += 1
    if slot >= _SIGNAL_SLOT_BASE:  # a signal's: a claim again lists it
        lease._signal = True
        tally.signals.add(pair)
    cnp.Py_INCREF(kind)  # PyArray_NewFromDescr steals it
    # no NPY_ARRAY_WRITEABLE: read-only, and the lease offers no writable
    # buffer, so numpy refuses to make it writable later
    arr = PyArray_NewFromDescr(
        _ndarray_type, kind, <int>ndim, dims, NULL, <void *>address,
        cnp.NPY_ARRAY_C_CONTIGUOUS, NULL)
    cnp.Py_INCREF(lease)  # PyArray_SetBaseObject steals it
    cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, lease)
    return arr


cdef object _checked(value):
    """A reference the fast checks refused: parse_ref says why."""
    _parse_ref(value)
    raise AssertionError("parse_ref accepted what resolve refused")


def call_frames(request_id, method, args, kwargs, pending):
    """See ``framerpc.wire._shmpath_py.call_frames``."""
    cdef list pairs = []
    cdef list wire = []
    cdef Py_ssize_t n = 0
    while pending and n < _MAX_RELEASES:
        pair = pending.popleft()
        pairs.append(pair)
        wire.append([pair[0], pair[1]])
        n += 1
    try:
        frames = _encode({
            _K_VERSION: _PROTOCOL_VERSION,
            _K_EVENT: _METHOD_CALL,
            _K_ID: request_id,
            _K_METHOD: method,
            _K_ARGS: args,
            _K_KWARGS: kwargs,
            _K_RELEASES: wire,
        })
    except Exception:  # an argument msgpack refuses
        pending.extendleft(reversed(pairs))
        raise
    return frames, pairs


def ref_reply(request_id, str segment, offset, cnp.ndarray value, slot, generation,
              info):
    """See ``framerpc.wire._shmpath_py.ref_reply``."""
    cdef Py_ssize_t i
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(value)
    shape = [dims[i] for i in range(cnp.PyArray_NDIM(value))]
    return _encode({
        _K_VERSION: _PROTOCOL_VERSION,
        _K_ID: request_id,
        _K_OK: True,
        _K_VALUE: {_REF_KEY: [segment, offset, cnp.PyArray_NBYTES(value), slot,
                              generation, _typestr(value), shape]},
        _K_INFO: info,
    })


cdef str _typestr(cnp.ndarray value):
    """``value.dtype.str``, cached (``_typestrs``)."""
    descr = <object>cnp.PyArray_DESCR(value)
    key = <Py_ssize_t><PyObject *>descr
    entry = _typestrs.get(key)
    if entry is not None and (<tuple>entry)[0] is descr:
        return <str>(<tuple>entry)[1]
    text = descr.str
    if len(_typestrs) < _MAX_CACHED_DTYPES:
        _typestrs[key] = (descr, text)
    return text


def lease_array(lease, cnp.dtype kind, tuple shape, Py_ssize_t address):
    """See ``framerpc.wire._shmpath_py.lease_array``: made through numpy's
    C API (numpy reading the lease's interface dict cost 5k instructions a
    frame, this under 1k); numpy's ``asarray`` beyond ``_MAX_DIMS``."""
    cdef cnp.npy_intp dims[_MAX_DIMS]
    cdef Py_ssize_t i, ndim = len(shape)
    if ndim > _MAX_DIMS:
        return np.asarray(lease)
    for i in range(ndim):
        dims[i] = <cnp.npy_intp>shape[i]
    cnp.Py_INCREF(kind)  # PyArray_NewFromDescr steals it
    arr = PyArray_NewFromDescr(
        _ndarray_type, kind, <int>ndim, dims, NULL, <void *><uintptr_t>address,
        cnp.NPY_ARRAY_CARRAY, NULL)
    cnp.Py_INCREF(lease)  # PyArray_SetBaseObject steals it
    cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, lease)
    return arr


cdef inline bint _is_pair(object item):
    """Whether ``item`` is a release's ``[slot, generation]`` of ints."""
    return (type(item) is list and len(<list>item) == 2
            and type((<list>item)[0]) is int and type((<list>item)[1]) is int)


def split_releases(value):
    """See ``framerpc.wire._shmpath_py.split_releases``."""
    cdef list replies = []
    cdef list signals = []
    cdef Py_ssize_t bad = 0, i, n
    if type(value) is not list:
        return [], [], 1
    n = len(<list>value)
    if n > _MAX_RELEASES:
        bad = n - _MAX_RELEASES
        n = _MAX_RELEASES
    for i in range(n):
        item = (<list>value)[i]
        if _is_pair(item):
            slot = (<list>item)[0]
            if slot < _SIGNAL_SLOT_BASE:
                replies.append((slot, (<list>item)[1]))
            else:
                signals.append((slot, (<list>item)[1]))
        else:
            bad += 1
    return replies, signals, bad


def parse_releases(value):
    """See ``framerpc.wire.shm.parse_releases``."""
    cdef list pairs = []
    cdef Py_ssize_t bad = 0, i, n
    if type(value) is not list:
        return [], 1
    n = len(<list>value)
    if n > _MAX_RELEASES:
        bad = n - _MAX_RELEASES
        n = _MAX_RELEASES
    for i in range(n):
        item = (<list>value)[i]
        if _is_pair(item):
            pairs.append(((<list>item)[0], (<list>item)[1]))
        else:
            bad += 1
    return pairs, bad


def copy_into(segment, cnp.ndarray value, bint split=True):
    """See ``framerpc.wire._shmpath_py.copy_into``: without the GIL for a
    C-contiguous array of plain data (a big one split between this thread
    and the worker thread, ``ext/_parcopy.h``, unless ``split`` is false),
    else numpy's copy."""
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(value)
    cdef char *dst
    cdef char *src
    if (not cnp.PyArray_IS_C_CONTIGUOUS(value) or (<object>value).dtype.hasobject
            or nbytes > <Py_ssize_t>segment.size):
        _copy_into_py(segment, value)  # strided, objects, or too small: numpy
        return
    dst = <char *><uintptr_t>(<object>segment.address)
    src = <char *>cnp.PyArray_DATA(value)
    with nogil:
        if split:
            pc_copy(dst, src, nbytes)  # a big one split with the worker thread
        else:
            memcpy(dst, src, nbytes)


def hold_copier():
    """See ``framerpc.wire._shmpath_py.hold_copier``: big copies may use
    the worker thread (started on the first one, on 2 or more CPUs).
    Returns the holders."""
    cdef int users
    with nogil:
        users = pc_hold()
    return users


def release_copier():
    """See ``framerpc.wire._shmpath_py.release_copier``: the last release
    stops and joins the worker thread. Returns the holders left."""
    cdef int users
    with nogil:
        users = pc_release()  # joins: the worker may be ending a chunk
    return users


_STAT_NAMES = ("holders", "alive", "started", "jobs", "joined", "chunks",
               "worker_chunks", "alone", "slept", "threshold", "chunk", "spin", "avoid",
               "same_cpu", "moved")


def copier_stats():
    """See ``framerpc.wire._shmpath_py.copier_stats``: the worker's state,
    counters and settings."""
    cdef unsigned long out[15]
    pc_read(out)
    return {name: out[i] for i, name in enumerate(_STAT_NAMES)}


def _copier_configure(size_t threshold=0, size_t chunk=0, int spin=-1, int mode=-1,
                      int avoid=-1):
    """Tests and benchmarks only (not while a copy runs): the smallest
    copy split, the chunk in bytes, the caller's spin before it sleeps,
    the mode (0 split, 1 the worker copies everything, 2 never the
    worker) and whether the worker is kept off the caller's CPU (1 or 0);
    0 or -1 keeps a setting."""
    if chunk and chunk < 64:
        raise ValueError(f"chunk {chunk} is under 64 bytes")
    if mode > 2:
        raise ValueError(f"mode {mode} is not 0, 1 or 2")
    pc_configure(threshold, chunk, spin, mode, avoid)
